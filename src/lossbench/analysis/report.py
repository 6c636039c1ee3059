"""Compare strategies over seeds: ``python -m lossbench.report <sweep dir> [<sweep dir> ...] [--out DIR]``.

Reads every ``summary.json`` under the given folders and groups the runs into *strategies*: runs whose
configs are equal in everything but the seed and where/how the run was written (:data:`IGNORED`). For
each task it prints one table, a row per strategy:

* mean ± std of the task's main metrics (:data:`MAIN_METRICS`, or ``--metrics``) over the strategy's
  completed runs; std is the sample standard deviation (ddof=1, :func:`lossbench.stats.mean_std`), shown
  only with two runs or more;
* ``runs``: completed runs (those averaged), ``diverged`` and ``failed``: counted, never averaged.

Skipped runs (a sweep's invalid combinations) are listed under the table. The report folder
(``<sweep dir>/report/`` or ``--out``) receives ``report.md``, ``report.csv``, ``final_<task>.png``
(mean ± std per strategy, one dot per seed) and ``curves_<task>.png`` (validation curves from each run's
``metrics.csv``, mean over seeds with a ±std band). Every file is written atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossbench.errors import DataError, UserError
from lossbench.paths import METRICS_FILE
from lossbench.stats import MeanStd, mean_std
from lossbench.summary import find_summaries, read_summary, write_atomic

MAIN_METRICS = {
    "multilabel": ("test/f1_macro", "test/f1_micro", "test/map", "test/exact_match"),
    "multiclass": ("test/acc", "test/nll", "test/ece"),
}
# config keys (and key prefixes, ending in ".") that do not change what a run measures
IGNORED = ("seed", "run_name", "output_root", "resume", "print_config", "logger.", "data.root", "data.cache_dir",
           "data.download", "trainer.progress_bar", "trainer.checkpoint", "trainer.divergence_check_every")
# order in which differing config keys appear in a strategy's label
LABEL_ORDER = ("data.", "model.", "head.", "loss.", "optimizer.", "trainer.")
REPORT_DIR = "report"


@dataclass
class Run:
    path: Path  # the run directory (the folder of its summary.json)
    summary: dict[str, Any]

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")

    @property
    def seed(self) -> Any:
        return self.summary.get("config", {}).get("seed")

    @property
    def config(self) -> dict[str, Any]:
        """The flat config that defines the strategy (dotted keys, :data:`IGNORED` left out)."""
        flat = flatten(_resolved(self.summary.get("config", {})))
        return {k: v for k, v in flat.items() if not _ignored(k)}

    def metric(self, name: str) -> float | None:
        value = self.summary.get("metrics", {}).get(name)
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


@dataclass
class Strategy:
    task: str
    config: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    label: str = ""

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.status == "completed"]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)

    def values(self, metric: str) -> list[float]:
        return [v for r in self.completed if (v := r.metric(metric)) is not None]

    def stats(self, metric: str) -> MeanStd | None:
        values = self.values(metric)
        return mean_std(values) if values else None


# --- loading and grouping -------------------------------------------------------------------------

def load_runs(roots: Iterable[Path]) -> list[Run]:
    roots = [Path(r) for r in roots]
    for root in roots:
        if not root.exists():
            raise DataError(f"{root} does not exist; pass a sweep directory such as runs/multirun/<time>")
    runs = []
    for path in find_summaries(roots):
        try:
            runs.append(Run(path.parent, read_summary(path)))
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"{path} is not a readable summary.json: {err}") from None
    if not runs:
        raise DataError(f"no summary.json under {', '.join(map(str, roots))}; pass a sweep or run directory")
    return runs


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"loss": {"name": "x"}}`` -> ``{"loss.name": "x"}``; lists become JSON text (hashable)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return flat


def _resolved(config: dict[str, Any]) -> dict[str, Any]:
    # failed/skipped runs store the config unresolved (an interpolation may be what failed)
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.create(config), resolve=True)
    except Exception:  # noqa: BLE001 -- any resolver error: group by the raw values instead
        return config


def _ignored(key: str) -> bool:
    return any(key.startswith(p) if p.endswith(".") else key == p for p in IGNORED)


def group_strategies(runs: Sequence[Run]) -> tuple[list[Strategy], list[Run]]:
    """Strategies (sorted by task, then label) and the skipped runs."""
    by_config: dict[str, Strategy] = {}
    skipped = []
    for run in runs:
        if run.status == "skipped":
            skipped.append(run)
            continue
        config = run.config
        key = json.dumps(config, sort_keys=True, default=str)
        by_config.setdefault(key, Strategy(task="", config=config)).runs.append(run)
    strategies = list(by_config.values())
    for strategy in strategies:
        # failed runs have no task; their completed/diverged siblings tell it
        tasks = {r.summary["task"] for r in strategy.runs if r.summary.get("task")}
        strategy.task = tasks.pop() if len(tasks) == 1 else "unknown"
    for task in {s.task for s in strategies}:
        label_strategies([s for s in strategies if s.task == task])
    strategies.sort(key=lambda s: (s.task, s.label))
    return strategies, skipped


def label_strategies(strategies: Sequence[Strategy]) -> None:
    """Short labels: ``head+loss``, then only the config values that differ between the strategies."""
    differing = _differing_keys([s.config for s in strategies])
    leaves = [k.rsplit(".", 1)[-1] for k in differing]
    for strategy in strategies:
        parts = [f"{strategy.config.get('head.name')}+{strategy.config.get('loss.name')}"]
        for key in differing:
            if key in ("head.name", "loss.name") or key not in strategy.config:
                continue
            value = _fmt_value(strategy.config[key])
            leaf = key.rsplit(".", 1)[-1]
            if leaf == "name":
                parts.append(value)
            else:
                parts.append(f"{leaf if leaves.count(leaf) == 1 else key}={value}")
        strategy.label = " ".join(parts)
    # strategies that differ only in keys some of them lack: name those keys
    for label in {s.label for s in strategies}:
        same = [s for s in strategies if s.label == label]
        if len(same) > 1:
            for key in _differing_keys([s.config for s in same], only_shared=False):
                for s in same:
                    s.label += f" {key}={_fmt_value(s.config.get(key))}"


def _differing_keys(configs: Sequence[dict[str, Any]], only_shared: bool = True) -> list[str]:
    """Keys whose values differ between configs; with ``only_shared``, between configs that both have it."""
    keys = sorted({k for c in configs for k in c}, key=_label_rank)
    differing = []
    for key in keys:
        present = [c[key] for c in configs if key in c]
        if only_shared:
            if len({json.dumps(v, default=str) for v in present}) > 1:
                differing.append(key)
        elif len(present) < len(configs) or len({json.dumps(v, default=str) for v in present}) > 1:
            differing.append(key)
    return differing


def _label_rank(key: str) -> tuple[int, bool, str]:
    rank = next((i for i, p in enumerate(LABEL_ORDER) if key.startswith(p)), len(LABEL_ORDER))
    return rank, not key.endswith(".name"), key


def _fmt_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def main_metrics(strategies: Sequence[Strategy], task: str, requested: Sequence[str] | None = None) -> list[str]:
    """The metrics to tabulate for a task: those of ``requested`` (or the task's main ones) that were logged."""
    wanted = list(requested or MAIN_METRICS.get(task, ()))
    return [m for m in wanted if any(s.values(m) for s in strategies if s.task == task)]


# --- tables -------------------------------------------------------------------------------------------

def format_stats(stats: MeanStd | None) -> str:
    if stats is None:
        return "–"
    return f"{stats.mean:.4f} ± {stats.std:.4f}" if stats.n > 1 else f"{stats.mean:.4f}"


def table_rows(strategies: Sequence[Strategy], metrics: Sequence[str]) -> list[list[str]]:
    return [[s.label, str(len(s.completed)), str(s.count("diverged")), str(s.count("failed")),
             *(format_stats(s.stats(m)) for m in metrics)] for s in strategies]


def table_header(metrics: Sequence[str]) -> list[str]:
    return ["strategy", "runs", "diverged", "failed", *metrics]


def skipped_lines(skipped: Sequence[Run]) -> list[str]:
    """One line per distinct skipped combination: its head, loss and reason, with a count."""
    counts: dict[str, int] = {}
    for run in skipped:
        config = run.summary.get("config", {})
        what = f"head={config.get('head', {}).get('name')} loss={config.get('loss', {}).get('name')}"
        line = f"{what}: {run.summary.get('error', 'no reason recorded')}"
        counts[line] = counts.get(line, 0) + 1
    return [f"{line} (×{n})" if n > 1 else line for line, n in sorted(counts.items())]


def markdown(strategies: Sequence[Strategy], skipped: Sequence[Run], metrics_by_task: dict[str, list[str]],
             roots: Sequence[Path]) -> str:
    lines = ["# lossbench report", "", f"Runs from: {', '.join(f'`{r}`' for r in roots)}.",
             "Metrics: mean ± sample std over completed runs (seeds); diverged and failed runs are counted, "
             "never averaged.", ""]
    for task, metrics in metrics_by_task.items():
        header = table_header(metrics)
        lines += [f"## {task}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
        rows = table_rows([s for s in strategies if s.task == task], metrics)
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        lines.append("")
    if skipped:
        lines += ["## Skipped combinations", "", *(f"- {line}" for line in skipped_lines(skipped)), ""]
    return "\n".join(lines)


def csv_text(strategies: Sequence[Strategy], metrics_by_task: dict[str, list[str]]) -> str:
    metrics = list(dict.fromkeys(m for ms in metrics_by_task.values() for m in ms))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["task", "strategy", "runs", "diverged", "failed", "seeds",
                     *(f"{m}_{part}" for m in metrics for part in ("mean", "std"))])
    for s in strategies:
        row: list[Any] = [s.task, s.label, len(s.completed), s.count("diverged"), s.count("failed"),
                          " ".join(str(r.seed) for r in sorted(s.completed, key=lambda r: str(r.seed)))]
        for m in metrics:
            stats = s.stats(m)
            row += ["", ""] if stats is None else [repr(stats.mean), repr(stats.std) if stats.n > 1 else ""]
        writer.writerow(row)
    return buffer.getvalue()


def print_tables(strategies: Sequence[Strategy], skipped: Sequence[Run],
                 metrics_by_task: dict[str, list[str]], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    # piped output (a log file, a notebook) gets wide lines rather than a table wrapped at 80 columns
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    for task, metrics in metrics_by_task.items():
        table = Table(title=f"{task}: mean ± std over seeds")
        for i, name in enumerate(table_header(metrics)):
            table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
        for row in table_rows([s for s in strategies if s.task == task], metrics):
            table.add_row(*row)
        console.print(table)
    if skipped:
        console.print("skipped combinations:")
        for line in skipped_lines(skipped):
            console.print(f"  {line}", markup=False)


# --- plots --------------------------------------------------------------------------------------------

def read_curves(run_dir: Path, prefix: str = "val/") -> dict[str, dict[int, float]]:
    """``{metric: {epoch: value}}`` for every ``<prefix>*`` column of the run's Lightning ``metrics.csv``."""
    path = Path(run_dir) / METRICS_FILE
    curves: dict[str, dict[int, float]] = {}
    if not path.exists():
        return curves
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for name, value in row.items():
                if name and name.startswith(prefix) and value not in ("", None) and row.get("epoch"):
                    curves.setdefault(name, {})[int(float(row["epoch"]))] = float(value)
    return curves


def _figure(n_panels: int, width: float, height: float):
    from matplotlib.figure import Figure

    cols = min(n_panels, 3)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_final(strategies: Sequence[Strategy], metrics: Sequence[str], title: str = ""):
    """One panel per metric: each strategy's mean ± std (error bar) and its runs (dots)."""
    fig, axes = _figure(len(metrics), 4.5, 0.5 + 0.45 * max(len(strategies), 2))
    colors = _colors(len(strategies))
    cols = min(len(metrics), 3)
    for i, (ax, metric) in enumerate(zip(axes, metrics, strict=False)):
        for y, (strategy, color) in enumerate(zip(strategies, colors, strict=True)):
            values = strategy.values(metric)
            if not values:
                continue
            stats = mean_std(values)
            ax.errorbar(stats.mean, y, xerr=stats.std if stats.n > 1 else None, fmt="o", color=color,
                        capsize=4, markersize=7)
            ax.scatter(values, [y] * len(values), color=color, alpha=0.35, s=14, zorder=3)
        ax.set_yticks(range(len(strategies)), [s.label for s in strategies] if i % cols == 0 else [])
        ax.set_ylim(-0.6, len(strategies) - 0.4)
        ax.invert_yaxis()
        ax.set_title(metric)
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def plot_curves(strategies: Sequence[Strategy], metrics: Sequence[str], title: str = ""):
    """One panel per validation metric: mean over each strategy's completed runs per epoch, ±std band."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    curves = {id(s): [read_curves(r.path) for r in s.completed] for s in strategies}
    logged = {m for runs in curves.values() for c in runs for m in c}
    metrics = [m for m in metrics if m in logged]
    if not metrics:
        return None
    fig, axes = _figure(len(metrics), 4.5, 3.2)
    for ax, metric in zip(axes, metrics, strict=False):
        for strategy, color in zip(strategies, _colors(len(strategies)), strict=True):
            per_run = [c[metric] for c in curves[id(strategy)] if metric in c]
            if not per_run:
                continue
            epochs = sorted({e for run in per_run for e in run})
            grid = np.array([[run.get(e, np.nan) for e in epochs] for run in per_run], dtype=float)
            mean = np.nanmean(grid, axis=0)
            x = np.array(epochs) + 1  # after epoch 0 = after one epoch of training
            ax.plot(x, mean, marker="o", markersize=3, color=color, label=strategy.label)
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


def curve_metrics(metrics: Sequence[str]) -> list[str]:
    """``val/loss`` and the validation twins of the table's ``test/`` metrics."""
    return ["val/loss", *(f"val/{m.split('/', 1)[1]}" for m in metrics if m.startswith("test/"))]


# --- writing ------------------------------------------------------------------------------------------

def write_text_atomic(path: Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text))


def save_figure(fig, path: Path) -> Path:
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


@dataclass
class Report:
    strategies: list[Strategy]
    skipped: list[Run]
    metrics_by_task: dict[str, list[str]]
    roots: list[Path]


def build_report(roots: Sequence[Path], metrics: Sequence[str] | None = None) -> Report:
    roots = [Path(r) for r in roots]
    strategies, skipped = group_strategies(load_runs(roots))
    tasks = sorted({s.task for s in strategies})
    return Report(strategies, skipped, {t: main_metrics(strategies, t, metrics) for t in tasks}, roots)


def write_report(report: Report, out: Path) -> list[Path]:
    """``report.md``, ``report.csv`` and the PNG plots into ``out``; returns the written paths."""
    out = Path(out)
    written = [write_text_atomic(out / "report.md", markdown(report.strategies, report.skipped,
                                                             report.metrics_by_task, report.roots)),
               write_text_atomic(out / "report.csv", csv_text(report.strategies, report.metrics_by_task))]
    for task, metrics in report.metrics_by_task.items():
        strategies = [s for s in report.strategies if s.task == task]
        if metrics:
            written.append(save_figure(plot_final(strategies, metrics, f"{task}: final test metrics"),
                                       out / f"final_{task}.png"))
        fig = plot_curves(strategies, curve_metrics(metrics), f"{task}: validation curves")
        if fig is not None:
            written.append(save_figure(fig, out / f"curves_{task}.png"))
    return written


def offline_wandb_dirs(roots: Sequence[Path]) -> list[Path]:
    """The ``wandb`` folders under the roots that hold offline runs not yet uploaded."""
    dirs = set()
    for root in roots:
        for run_file in Path(root).rglob("offline-run-*/run-*.wandb"):
            if not run_file.with_suffix(".wandb.synced").exists():
                dirs.add(run_file.parent.parent)
    return sorted(dirs)


def sync_command(roots: Sequence[Path], wandb_dirs: Sequence[Path]) -> str:
    """``wandb sync`` for the offline runs: ``<root>/*/wandb`` for a sweep's jobs, else each folder."""
    paths = []
    for root in map(Path, roots):
        under = [d for d in wandb_dirs if d.is_relative_to(root)]
        if len(under) > 1 and all(d.parent.parent == root for d in under):
            paths.append(f"{shlex.quote(str(root))}/*/wandb")
        else:
            paths += [shlex.quote(str(d)) for d in under]
    return "wandb sync " + " ".join(dict.fromkeys(paths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lossbench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories (searched for summary.json)")
    parser.add_argument("--out", type=Path, help=f"report folder (default: <sweep dir>/{REPORT_DIR})")
    parser.add_argument("--metrics", nargs="+", help="test metrics to tabulate, e.g. test/f1_macro test/pred_count")
    args = parser.parse_args(argv)
    try:
        if args.out is None and len(args.dirs) > 1:
            raise UserError(f"{len(args.dirs)} directories given: pass --out DIR for the report")
        report = build_report(args.dirs, args.metrics)
        print_tables(report.strategies, report.skipped, report.metrics_by_task)
        written = write_report(report, args.out or args.dirs[0] / REPORT_DIR)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report written to {written[0].parent}: {', '.join(p.name for p in written)}")
    if wandb_dirs := offline_wandb_dirs(args.dirs):
        print(f"W&B offline runs in {len(wandb_dirs)} folder(s); upload them with:  "
              + sync_command(args.dirs, wandb_dirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
