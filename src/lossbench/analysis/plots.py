"""Every plot of the sweep report and the reproduction, drawn on ``matplotlib.figure.Figure`` objects (no
pyplot state, safe in worker processes and notebooks) and saved atomically with ``save_figure``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from lossbench.summary import write_atomic

VERDICT_COLORS = {"supported": "tab:green", "contradicted": "tab:red", "a higher": "tab:blue",
                  "a lower": "tab:orange"}


def save_figure(fig, path: Path) -> Path:
    return write_atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def figure(n_panels: int, width: float, height: float, max_cols: int = 3):
    """A constrained-layout figure with ``n_panels`` axes (``max_cols`` per row); unused axes hidden."""
    from matplotlib.figure import Figure

    cols = max(1, min(n_panels, max_cols))
    rows = max(1, math.ceil(n_panels / cols))
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_final(labels: Sequence[str], values: Callable[[int, str], list[float]], metrics: Sequence[str],
               title: str = ""):
    """One panel per metric: each strategy's mean ± std (error bar) and its runs (dots).
    ``values(i, metric)``: the per-run values of strategy ``i``."""
    fig, axes = figure(len(metrics), 4.5, 0.5 + 0.45 * max(len(labels), 2))
    width, height = fig.get_size_inches()
    fig.set_size_inches(width + 0.075 * max(map(len, labels), default=0), height)  # room for long labels
    palette = colors(len(labels))
    cols = min(len(metrics), 3)
    for i, (ax, metric) in enumerate(zip(axes, metrics, strict=False)):
        for y, color in enumerate(palette):
            v = np.asarray(values(y, metric), dtype=float)
            if not v.size:
                continue
            ax.errorbar(v.mean(), y, xerr=v.std(ddof=1) if v.size > 1 else None, fmt="o", color=color,
                        capsize=4, markersize=7)
            ax.scatter(v, [y] * v.size, color=color, alpha=0.35, s=14, zorder=3)
        ax.set_yticks(range(len(labels)), list(labels) if i % cols == 0 else [])
        ax.set_ylim(-0.6, len(labels) - 0.4)
        ax.invert_yaxis()
        ax.set_title(metric)
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def plot_curves(labels: Sequence[str], curves: Sequence[list[dict[str, dict[int, float]]]],
                metrics: Sequence[str], title: str = ""):
    """One panel per validation metric: mean over each strategy's runs per epoch, ±std band.
    ``curves[i]``: strategy ``i``'s runs, each ``{metric: {epoch: value}}``. None when nothing was logged."""
    from matplotlib.ticker import MaxNLocator

    logged = {m for runs in curves for c in runs for m in c}
    metrics = [m for m in metrics if m in logged]
    if not metrics:
        return None
    fig, axes = figure(len(metrics), 4.5, 3.2)
    for ax, metric in zip(axes, metrics, strict=False):
        for label, runs, color in zip(labels, curves, colors(len(labels)), strict=True):
            per_run = [c[metric] for c in runs if metric in c]
            if not per_run:
                continue
            epochs = sorted({e for run in per_run for e in run})
            grid = np.array([[run.get(e, np.nan) for e in epochs] for run in per_run], dtype=float)
            mean = np.nanmean(grid, axis=0)
            x = np.array(epochs) + 1  # after epoch 0 = after one epoch of training
            ax.plot(x, mean, marker="o", markersize=3, color=color, label=label)
            if len(per_run) > 1:
                std = np.nanstd(grid, axis=0, ddof=1)
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_per_seed(panels: Sequence[tuple[str, list[str], dict[int, list[float | None]]]], ylabel: str):
    """One panel per (title, strategy names, {seed: value per strategy}): a line per seed across strategies."""
    width = max(6, 0.7 * max(len(names) for _, names, _ in panels))
    fig, axes = figure(len(panels), width, 4.5, max_cols=len(panels))
    for ax, (title, names, by_seed) in zip(axes, panels, strict=False):
        for ys in by_seed.values():
            pts = [(i, y) for i, y in enumerate(ys) if y is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", alpha=0.5, lw=0.8, ms=3)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{title}: one line per seed", fontsize=9)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    return fig


def plot_differences(rows: Sequence[dict], xlabel: str):
    """Mean difference with its t CI per comparison (``label``, ``mean``, ``low``, ``high``, ``verdict``,
    optional ``detectable``: a grey band ±detectable around 0, the differences the design would not reliably
    see)."""
    fig, axes = figure(1, 8, 0.45 * len(rows) + 1.2)
    ax = axes[0]
    for i, r in enumerate(rows):
        color = next((c for key, c in VERDICT_COLORS.items() if r["verdict"].startswith(key)), "tab:gray")
        ax.errorbar(r["mean"], i, xerr=[[r["mean"] - r["low"]], [r["high"] - r["mean"]]], fmt="o", color=color,
                    capsize=3)
        d = r.get("detectable")
        if d is not None and math.isfinite(d):
            ax.plot([-d, d], [i, i], color="0.6", lw=6, alpha=0.35, solid_capstyle="butt", zorder=0)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return fig


def plot_critical_difference(names: Sequence[str], mean_ranks: Sequence[float], cd: float,
                             cliques: Sequence[tuple[int, int]], title: str = ""):
    """Critical-difference diagram (Demšar 2006): average ranks on an axis (1 = best, at the left), one
    label per strategy, a bar over each group whose ranks differ by less than the critical difference."""
    order = np.argsort(mean_ranks)
    ranks = np.asarray(mean_ranks, dtype=float)[order]
    labels = [names[i] for i in order]
    k = len(labels)
    half = math.ceil(k / 2)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 1.6 + 0.3 * half + 0.2 * len(cliques)))  # axes off: bbox_inches="tight" trims it
    ax = fig.subplots()
    low, high = 1, max(k, math.ceil(ranks.max()))
    ax.set_xlim(low - 0.5, high + 0.5)
    ax.hlines(0, low, high, color="k", lw=1)
    for r in range(low, high + 1):
        ax.vlines(r, 0, 0.08, color="k", lw=1)
        ax.text(r, 0.12, str(r), ha="center", va="bottom", fontsize=8)
    for i, (rank, label) in enumerate(zip(ranks, labels, strict=True)):
        left = i < half
        depth = -0.25 - 0.3 * (i if left else k - 1 - i)
        edge = low - 0.4 if left else high + 0.4
        ax.plot([rank, rank, edge], [0, depth, depth], color="k", lw=0.8)
        ax.text(edge, depth, f"{label} ({rank:.2f})", ha="right" if left else "left", va="center", fontsize=8)
    for j, (a, b) in enumerate(cliques):
        y = -0.12 - 0.08 * j
        ax.plot([ranks[a] - 0.03, ranks[b] + 0.03], [y, y], color="tab:red", lw=3, solid_capstyle="round")
    ax.plot([low, low + cd], [0.45, 0.45], color="k", lw=1.5)
    ax.text(low + cd / 2, 0.5, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(-0.4 - 0.3 * half, 0.8)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def plot_reliability(panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], title: str = ""):
    """Reliability diagrams, one panel per (label, mean confidence per bin, fraction positive per bin, count
    per bin): bars of the observed frequency against the diagonal of perfect calibration."""
    fig, axes = figure(len(panels), 3.4, 3.4, max_cols=4)
    for ax, (label, confidence, frequency, count) in zip(axes, panels, strict=False):
        n_bins = len(count)
        centres = (np.arange(n_bins) + 0.5) / n_bins
        filled = np.asarray(count) > 0
        ax.bar(centres[filled], np.asarray(frequency)[filled], width=1 / n_bins, edgecolor="k", lw=0.4,
               color="tab:blue", alpha=0.7, label="fraction positive")
        ax.plot(np.asarray(confidence)[filled], np.asarray(frequency)[filled], "o", color="tab:red", ms=3,
                label="(mean p, fraction)")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("predicted probability", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="x-small", loc="upper left")
    if title:
        fig.suptitle(title)
    return fig


def plot_tuning_budget(panels: Sequence[tuple[str, list[tuple[str, dict[str, list[float]]]]]], ylabel: str):
    """One panel per setting: each tuned strategy's expected best validation score against the number of
    tuning trials (``lossbench.analysis.stats.expected_max_curve``: ``n``, ``mean``, ``low``, ``high``),
    with its bootstrap band."""
    fig, axes = figure(len(panels), 4.8, 3.4)
    for ax, (title, strategies) in zip(axes, panels, strict=False):
        for (label, curve), color in zip(strategies, colors(len(strategies)), strict=True):
            ax.plot(curve["n"], curve["mean"], marker="o", markersize=3, color=color, label=label)
            ax.fill_between(curve["n"], curve["low"], curve["high"], color=color, alpha=0.15, linewidth=0)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("tuning trials")
        ax.set_xticks(strategies[0][1]["n"])
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle("expected best validation score for a budget of n trials (Dodge et al. 2019), 95% bootstrap band",
                 fontsize=9)
    return fig


def plot_against_rate(panels: Sequence[tuple[str, str, str, list[tuple[str, list[float], list[float], list[float]]]]],
                      title: str = ""):
    """One panel per (title, x label, y label, lines): each line a strategy's ``(label, rates, means, stds)``,
    drawn as mean with a ±std band, one marker per rate."""
    fig, axes = figure(len(panels), 4.6, 3.4)
    for ax, (panel_title, xlabel, ylabel, lines) in zip(axes, panels, strict=False):
        for (label, xs, means, stds), color in zip(lines, colors(len(lines)), strict=True):
            if not xs:
                continue
            order = np.argsort(xs)
            x, m, s = (np.asarray(v, dtype=float)[order] for v in (xs, means, stds))
            ax.plot(x, m, marker="o", markersize=4, color=color, label=label)
            ax.fill_between(x, m - s, m + s, color=color, alpha=0.18, linewidth=0)
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
