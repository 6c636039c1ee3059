"""Numerical stability of every loss in float64, float32, float16 and bfloat16.

One logit ``x`` is swept over [-100, 100] (step ``--step``) with the swept class's target ``t`` in {0, 1}.
Each sweep point is one sample of C = 4 classes: logits ``(x, 0, 0, 0)`` and multi-hot target
``(t, 1, 0, 0)`` (one other positive class, so every sample has a label; the partition head's extra
output is set to the true label count ``t + 1``). Targets go through ``lossbench.targets.prepare`` as in
training. For each loss, dtype and target the script casts logits and targets to the dtype, computes
the per-sample loss (summed over classes) and its gradient with respect to ``x`` in that dtype
(autograd), and compares both with the same loss computed in float64 on the same rounded logits:

    error = |value - value_float64| / max(1, |value_float64|)     (absolute below 1, relative above)

It reports where the loss and the gradient first become inf/NaN moving out from x = 0, the share of
sweep points where they are non-finite, and the largest error where both are finite. Samples are
independent except for ``two_way``, whose class-wise term couples a batch: it is evaluated one
sample per batch (``torch.func.vmap``).

Writes ``<out>/stability.csv`` (every row), ``<out>/stability.md`` (tables) and ``<out>/stability.png``.
Usage: ``lossbench-stability [--step 0.01] [--out reports/stability] [--device cpu]`` (``make stability``).
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lossbench import losses
from lossbench.targets import prepare

NUM_CLASSES = 4
DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CONFIGS: list[tuple[str, dict]] = [
    ("bce_with_logits", {}),
    ("weighted_bce", {"pos_weight": 3.0}),
    ("cross_entropy", {}),
    ("bce_manual", {"eps": 0.0}),
    ("bce_manual", {}),
    ("bce_manual", {"eps": 0.0, "head": "softmax"}),
    ("bce_manual", {"head": "softmax"}),
    ("abs_kl", {}),
    ("abs_kl", {"head": "softmax"}),
    ("partition_softmax", {"variant": "kl_mse"}),
    ("partition_softmax", {"variant": "abs_kl_product"}),
    ("focal", {}),
    ("asymmetric", {}),
    ("zlpr", {}),
    ("two_way", {}),
    ("poly", {}),
    ("gce", {}),
    ("sce", {}),
    ("mae", {}),
    ("nce_rce", {}),
    ("wan", {}),
    ("hill", {}),
]
BATCH_COUPLED = {"two_way"}


def label(name: str, params: dict) -> str:
    head = params.get("head", losses.loss_class(name).heads[0])
    shown = ", ".join(f"{k}={v}" for k, v in params.items() if k != "head")
    return f"{name}[{head}{', ' + shown if shown else ''}]"


def sweep(name: str, params: dict, dtype: torch.dtype, target: int, xs: torch.Tensor, device: str):
    """Per-sample loss and d loss / d x at every sweep point, as float64 numpy arrays."""
    cls = losses.loss_class(name)
    loss = losses.get_loss(name, reduction="none", **params).to(device)
    k = len(xs)
    raw = torch.zeros(k, NUM_CLASSES, dtype=torch.float64)
    raw[:, 0] = xs
    multihot = torch.zeros(k, NUM_CLASSES)
    multihot[:, 0], multihot[:, 1] = float(target), 1.0
    if cls.heads == ("partition",):
        raw = torch.cat([raw, multihot.sum(1, keepdim=True).double()], dim=1)
    y = prepare(multihot, cls.target_form, NUM_CLASSES)
    y = (y.to(dtype) if y.is_floating_point() else y).to(device)
    raw = raw.to(dtype).to(device).requires_grad_(True)

    def per_sample(logits, t):
        values = loss(logits, t)
        return values.sum(dim=1) if values.ndim == 2 else values

    if name in BATCH_COUPLED:  # one sample per batch
        def one(row, t):
            return per_sample(row[None], t[None])[0]

        values = torch.func.vmap(one)(raw.detach(), y)
        grads = torch.func.vmap(torch.func.grad(one))(raw.detach(), y)
    else:
        values = per_sample(raw, y)
        (grads,) = torch.autograd.grad(values.sum(), raw)
    return values.detach().double().cpu().numpy(), grads[:, 0].double().cpu().numpy()


def first_non_finite(xs: np.ndarray, bad: np.ndarray) -> tuple[float | None, float | None]:
    """The non-finite points closest to x = 0 on each side (None when that side is finite)."""
    neg, pos = xs[(xs <= 0) & bad], xs[(xs > 0) & bad]
    return (float(neg.max()) if len(neg) else None, float(pos.min()) if len(pos) else None)


def kind(values: np.ndarray) -> str:
    """Which non-finite values occur: "inf", "NaN", "inf+NaN" or "" (none)."""
    found = [name for name, present in (("inf", np.isinf(values).any()), ("NaN", np.isnan(values).any())) if present]
    return "+".join(found)


def max_error(value: np.ndarray, reference: np.ndarray) -> float:
    both = np.isfinite(value) & np.isfinite(reference)
    if not both.any():
        return math.nan
    return float((np.abs(value[both] - reference[both]) / np.maximum(1.0, np.abs(reference[both]))).max())


@dataclass
class Row:
    loss: str
    dtype: str
    target: int
    loss_first_nonfinite_neg: float | None
    loss_first_nonfinite_pos: float | None
    loss_nonfinite_share: float
    loss_nonfinite_kind: str
    grad_first_nonfinite_neg: float | None
    grad_first_nonfinite_pos: float | None
    grad_nonfinite_share: float
    grad_nonfinite_kind: str
    max_loss_error: float
    max_grad_error: float


def study(step: float, device: str) -> tuple[list[Row], dict, np.ndarray]:
    xs = torch.arange(-100.0, 100.0 + step / 2, step, dtype=torch.float64)
    xs_np = xs.numpy()
    rows, status = [], {}
    for name, params in CONFIGS:
        for target in (0, 1):
            for dtype_name, dtype in DTYPES.items():
                value, grad = sweep(name, params, dtype, target, xs, device)
                # the reference sees the same (rounded) logits, so the error is the loss's own
                ref_value, ref_grad = sweep(name, params, torch.float64, target, xs.to(dtype).double(), device)
                bad_value, bad_grad = ~np.isfinite(value), ~np.isfinite(grad)
                status[label(name, params), dtype_name, target] = np.where(bad_value, 2, np.where(bad_grad, 1, 0))
                rows.append(Row(
                    label(name, params), dtype_name, target,
                    *first_non_finite(xs_np, bad_value), float(bad_value.mean()), kind(value),
                    *first_non_finite(xs_np, bad_grad), float(bad_grad.mean()), kind(grad),
                    max_error(value, ref_value), max_error(grad, ref_grad),
                ))
    return rows, status, xs_np


def where(neg: float | None, pos: float | None) -> str:
    parts = ([f"x ≤ {neg:g}"] if neg is not None else []) + ([f"x ≥ {pos:g}"] if pos is not None else [])
    return ", ".join(parts) if parts else "never"


def summary_cell(rows: list[Row]) -> str:
    """One (loss, dtype) cell over both targets: the non-finite points closest to 0 for loss and gradient."""
    parts = []
    for what in ("loss", "grad"):
        negs = [getattr(r, f"{what}_first_nonfinite_neg") for r in rows]
        poss = [getattr(r, f"{what}_first_nonfinite_pos") for r in rows]
        neg = max((v for v in negs if v is not None), default=None)
        pos = min((v for v in poss if v is not None), default=None)
        if neg is not None or pos is not None:
            parts.append(f"{what}: {where(neg, pos)}")
    return "; ".join(parts) if parts else "finite"


def error_cell(rows: list[Row]) -> str:
    worst = [max(r.max_loss_error for r in rows), max(r.max_grad_error for r in rows)]
    return " / ".join(fmt_err(e) for e in worst)


def fmt_err(e: float) -> str:
    return "n/a" if math.isnan(e) else f"{e:.1e}"


def write_markdown(rows: list[Row], path: Path, step: float, device: str) -> None:
    by_loss: dict[str, list[Row]] = {}
    for r in rows:
        by_loss.setdefault(r.loss, []).append(r)
    lines = [
        "# Loss stability: where each loss and its gradient become inf/NaN",
        "",
        f"Generated by `lossbench-stability --step {step} --device {device}` (torch {torch.__version__}).",
        "",
        f"Sweep: one logit x over [-100, 100] in steps of {step}; each point is a {NUM_CLASSES}-class sample with "
        "logits (x, 0, 0, 0) and multi-hot target (t, 1, 0, 0), t ∈ {0, 1} (the partition head's count output "
        "is the true label count t + 1). Low precision: logits and targets are cast to the dtype and the loss "
        "(summed over classes) and d loss / d x are computed in that dtype by autograd, then compared with the "
        "same loss in float64 on the same (rounded) logits. Error = |value − float64| / max(1, |float64|), the "
        "largest over the points where both are finite. \"x ≥ a\" names the first non-finite point moving out from 0 (later points may be finite).",
        "",
        "## Summary: first non-finite loss / gradient",
        "",
        "| loss[head, params] | " + " | ".join(DTYPES) + " |",
        "|---|" + "---|" * len(DTYPES),
    ]
    for name, group in by_loss.items():
        cells = [summary_cell([r for r in group if r.dtype == d]) for d in DTYPES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Largest error against float64 (loss / gradient), worst of t = 0 and t = 1",
        "",
        "| loss[head, params] | " + " | ".join(d for d in DTYPES if d != "float64") + " |",
        "|---|" + "---|" * (len(DTYPES) - 1),
    ]
    for name, group in by_loss.items():
        cells = [error_cell([r for r in group if r.dtype == d]) for d in DTYPES if d != "float64"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Every sweep",
        "",
        "| loss[head, params] | dtype | t | loss non-finite | share | grad non-finite | share | max loss error | max grad error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.loss} | {r.dtype} | {r.target} "
            f"| {where(r.loss_first_nonfinite_neg, r.loss_first_nonfinite_pos)} {r.loss_nonfinite_kind} "
            f"| {r.loss_nonfinite_share:.1%} "
            f"| {where(r.grad_first_nonfinite_neg, r.grad_first_nonfinite_pos)} {r.grad_nonfinite_kind} "
            f"| {r.grad_nonfinite_share:.1%} | {fmt_err(r.max_loss_error)} | {fmt_err(r.max_grad_error)} |"
        )
    path.write_text("\n".join(lines) + "\n")


def write_csv(rows: list[Row], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def plot(status: dict, xs: np.ndarray, path: Path) -> None:
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state
    from matplotlib.patches import Rectangle

    names = list(dict.fromkeys(k[0] for k in status))
    fig = Figure(figsize=(4.2 * len(DTYPES) + 3, 0.42 * len(names) + 1.6))
    axes = fig.subplots(1, len(DTYPES), sharey=True)
    cmap = ListedColormap(["#d9ead3", "#f6b26b", "#cc0000"])
    for ax, dtype in zip(axes, DTYPES, strict=True):
        image = np.stack([status[n, dtype, t] for n in names for t in (0, 1)])
        ax.imshow(image, aspect="auto", cmap=cmap, vmin=0, vmax=2, interpolation="nearest",
                  extent=(xs[0], xs[-1], len(image) - 0.5, -0.5))
        ax.set_title(dtype)
        ax.set_xlabel("swept logit x")
        ax.axvline(0, color="grey", lw=0.5)
    axes[0].set_yticks(range(2 * len(names)))
    axes[0].set_yticklabels([f"{n}  t={t}" for n in names for t in (0, 1)], fontsize=7)
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in cmap.colors]
    fig.legend(handles, ["loss and gradient finite", "gradient inf/NaN", "loss inf/NaN"], loc="lower center", ncol=3)
    fig.suptitle("Where each loss (rows) breaks, per dtype (columns)")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)


def print_summary(rows: list[Row]) -> None:
    table = Table(title="first non-finite loss / gradient (t = swept class's target)")
    table.add_column("loss[head, params]")
    for d in DTYPES:
        table.add_column(d)
    for name in dict.fromkeys(r.loss for r in rows):
        table.add_row(escape(name), *(summary_cell([r for r in rows if r.loss == name and r.dtype == d]) for d in DTYPES))
    Console(width=200).print(table)


def main(argv: list[str] | None = None) -> int:
    """``lossbench-stability`` / ``python -m lossbench.stability`` / ``make stability``."""
    parser = argparse.ArgumentParser(prog="lossbench-stability", description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=float, default=0.01, help="sweep step in logit units")
    parser.add_argument("--out", type=Path, default=Path("reports/stability"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if not 0 < args.step <= 10:
        parser.error(f"--step must be in (0, 10], got {args.step}")
    torch.set_num_threads(1)  # small tensors: one thread is enough, and far faster on a busy machine
    rows, status, xs = study(args.step, args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "stability.csv")
    write_markdown(rows, args.out / "stability.md", args.step, args.device)
    plot(status, xs, args.out / "stability.png")
    print_summary(rows)
    print(f"wrote {args.out}/stability.md, stability.csv, stability.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
