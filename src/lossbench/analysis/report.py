"""Compare strategies over seeds: ``python -m lossbench.report <sweep dir> [<sweep dir> ...] [--out DIR]``.

Reads every ``summary.json`` under the given folders and groups the runs into *strategies*: runs whose
configs are equal in everything but the seed and where/how the run was written (``IGNORED``). For
each task it prints one table, a row per strategy:

* mean ± std of the task's main metrics (``MAIN_METRICS``, or ``--metrics``) over the strategy's
  completed runs; std is the sample standard deviation (ddof=1, ``lossbench.analysis.stats.mean_std``), shown
  only with two runs or more;
* ``runs``: completed runs (those averaged), ``diverged`` and ``failed``: counted, never averaged.

Skipped runs (a sweep's invalid combinations) are listed under the table. The report folder
(``<sweep dir>/report/`` or ``--out``) receives ``report.md``, ``report.csv``, ``final_<task>.png``
(mean ± std per strategy, one dot per seed) and ``curves_<task>.png`` (validation curves from each run's
``metrics.csv``, mean over seeds with a ±std band). Every file is written atomically.

Comparisons (``--baseline LABEL``: every strategy against that one; ``--pairs all``: every pair) on the
``--compare`` metrics (default: the task's first main metric), per task: paired over the seeds both
strategies completed (paired t + exact Wilcoxon signed-rank), or, when they share no seed, unpaired (Welch
t + Mann–Whitney U, said so in the table). Accuracies and label counts are compared as the integers they
are when the runs logged ``test/samples``. Holm over the task's comparisons (the family is named in the
report), a verdict column and the smallest difference the design detects with 80% power at ``α/m``
(``lossbench.analysis.stats``). Written to ``report.md``, ``comparisons.csv`` and ``report.json`` (its
``comparisons`` list: ``a``, ``b``, ``metric``, ``n``, ``mean_diff``, ``ci_low``, ``ci_high``, ``p_t``,
``p_wilcoxon``, ``p_t_holm``, ``p_wilcoxon_holm``, ``verdict`` and more), with ``differences_<task>.png``.
Across ≥ 3 settings (values of ``--blocks``, default every ``data.`` key) with ≥ 3 strategies in each: a rank
table, the Friedman test and a critical-difference diagram (``cd_<task>.png``). Multi-label runs that
logged reliability bins get ``reliability_<task>.png``. ``--wandb`` (default: when the runs used
``logger=wandb``) logs the tables and PNGs to one W&B run of the sweep's group with ``job_type=report``.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import math
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lossbench.analysis import plots
from lossbench.analysis.stats import (
    ALPHA,
    POWER,
    MeanStd,
    assess_family,
    friedman,
    mean_std,
    nemenyi_cliques,
    paired_comparison,
    unpaired_comparison,
)
from lossbench.errors import DataError, UserError
from lossbench.paths import METRICS_FILE
from lossbench.summary import find_summaries, flatten, read_summary, write_atomic, write_json_atomic

MAIN_METRICS = {
    "multilabel": ("test/f1_macro", "test/f1_micro", "test/map", "test/exact_match", "test/ece"),
    "multiclass": ("test/acc", "test/nll", "test/ece"),
}
# per-sample fractions and means of counts: times test/samples they are integers (correct predictions, ...)
COUNT_METRICS = ("test/acc", "test/exact_match", "test/pred_count", "test/true_count")
LOWER_IS_BETTER = ("test/nll", "test/ece", "test/loss", "test/hamming")
SAMPLES = "test/samples"
PAIRS = ("all",)
# config keys (and key prefixes, ending in ".") that do not change what a run measures
IGNORED = ("seed", "run_name", "output_root", "resume", "print_config", "logger.", "data.root", "data.cache_dir",
           "data.download", "trainer.progress_bar", "trainer.checkpoint", "trainer.divergence_check_every", "members_forward")
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
        """The flat config that defines the strategy (dotted keys, ``IGNORED`` left out)."""
        flat = flatten(_resolved(self.summary.get("config", {})))
        # lists as JSON text: a strategy's config is a dict key
        return {k: json.dumps(v) if isinstance(v, list) else v for k, v in flat.items() if not _ignored(k)}

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

    def by_seed(self, metric: str) -> dict[Any, float]:
        return {r.seed: v for r in self.completed if (v := r.metric(metric)) is not None}

    def counts(self, metric: str) -> tuple[dict[Any, int], int] | None:
        """``({seed: value × samples}, samples)`` for a per-sample metric of ``COUNT_METRICS``, when every
        run logged the same ``test/samples`` and the products are integers; else None."""
        if metric not in COUNT_METRICS:
            return None
        samples = {r.metric(SAMPLES) for r in self.completed}
        if len(samples) != 1 or None in samples:
            return None
        n = int(samples.pop())
        out = {}
        for seed, value in self.by_seed(metric).items():
            count = value * n
            if abs(count - round(count)) > 0.01:  # not a count after all: compare the values as they are
                return None
            out[seed] = int(round(count))
        return out, n


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


def print_comparisons(report: Report, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 200)
    for task, rows in report.comparisons.items():
        table = Table(title=f"{task}: comparisons (Holm over {sum('comparison' in r for r in rows)})")
        for name in ("a", "b", "metric", "n", "mean a − b", "p (t), Holm", "p (rank), Holm", "verdict",
                     "detectable"):
            table.add_column(name, justify="left" if name in ("a", "b", "metric", "verdict") else "right")
        for r in rows:
            cells = comparison_cells(r)
            table.add_row(*cells[:5], cells[10], cells[11], cells[12].strip("*"), cells[13])
        console.print(table)


# --- comparisons ---------------------------------------------------------------------------------

def comparison_pairs(strategies: Sequence[Strategy], baseline: str | None, pairs: str | None
                     ) -> list[tuple[Strategy, Strategy]]:
    """``(a, b)`` pairs of one task's strategies: each against ``baseline`` (a = the other, b = baseline),
    or every pair in table order (``pairs="all"``)."""
    if baseline is not None:
        base = [s for s in strategies if s.label == baseline]
        if not base:
            return []
        return [(s, base[0]) for s in strategies if s is not base[0]]
    if pairs == "all":
        return list(itertools.combinations(strategies, 2))
    return []


def compare(a: Strategy, b: Strategy, metric: str) -> dict[str, Any]:
    """One comparison of ``a`` with ``b`` on ``metric``: paired over their shared seeds, else unpaired."""
    row: dict[str, Any] = {"task": a.task, "a": a.label, "b": b.label, "metric": metric}
    counts_a, counts_b = a.counts(metric), b.counts(metric)
    integer = counts_a is not None and counts_b is not None and counts_a[1] == counts_b[1]
    va, vb = (counts_a[0], counts_b[0]) if integer else (a.by_seed(metric), b.by_seed(metric))
    scale = 1 / counts_a[1] if integer else 1.0
    shared = sorted(set(va) & set(vb), key=str)
    row["on"] = "integer counts (× 1/" + str(counts_a[1]) + ")" if integer else "values"
    dtype = np.int64 if integer else float
    if len(shared) >= 2:
        comp = paired_comparison(np.array([va[k] for k in shared], dtype=dtype),
                                 np.array([vb[k] for k in shared], dtype=dtype), scale)
        row["seeds"] = " ".join(map(str, shared))
    elif not shared and len(va) >= 2 and len(vb) >= 2:
        comp = unpaired_comparison([va[k] * scale for k in va], [vb[k] * scale for k in vb])
        row["seeds"] = "none shared"
    else:
        row["skipped"] = (f"{len(shared)} shared seed(s) and {len(va)} / {len(vb)} runs: a paired comparison "
                          "needs 2 shared seeds, an unpaired one 2 runs each and no shared seed")
        return row
    row["comparison"] = comp
    return row


def compare_strategies(strategies: Sequence[Strategy], metrics_by_task: dict[str, list[str]],
                       baseline: str | None, pairs: str | None, compare_metrics: Sequence[str] | None,
                       alpha: float = ALPHA) -> dict[str, list[dict[str, Any]]]:
    """Per task, the comparisons of the table with Holm over all of them (the task's family)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for task, metrics in metrics_by_task.items():
        group = [s for s in strategies if s.task == task]
        chosen = [m for m in (compare_metrics or metrics[:1]) if any(s.values(m) for s in group)]
        rows = [compare(a, b, m) for m in chosen for a, b in comparison_pairs(group, baseline, pairs)]
        done = [r for r in rows if "comparison" in r]
        for r, extra in zip(done, assess_family([r["comparison"] for r in done], [None] * len(done), alpha),
                            strict=True):
            r.update(extra)
        if rows:
            out[task] = rows
    return out


def comparison_record(row: dict[str, Any]) -> dict[str, Any]:
    """The flat JSON/CSV record of one comparison (the issue's fields first)."""
    record = {k: row.get(k) for k in ("task", "a", "b", "metric")}
    c = row.get("comparison")
    if c is None:
        return {**record, "skipped": row["skipped"]}
    record.update(n=c.n_a if c.paired else c.n, mean_diff=c.mean_diff, ci_low=c.ci_low, ci_high=c.ci_high,
                  p_t=c.p_t, p_wilcoxon=c.p_wilcoxon, p_t_holm=row["p_t_holm"],
                  p_wilcoxon_holm=row["p_wilcoxon_holm"], verdict=row["verdict"])
    record.update(paired=c.paired, seeds=row["seeds"], on=row["on"], boot_low=c.boot_low, boot_high=c.boot_high,
                  effect_size=c.effect_size, t_test=c.t_test, rank_test=c.rank_test, rank_method=c.rank_method,
                  t_stat=c.t_stat, rank_stat=c.rank_stat, rank_opposite=c.rank_opposite,
                  t_direction=c.t_direction, wilcoxon_direction=c.wilcoxon_direction,
                  detectable=None if math.isinf(row["detectable"]) else row["detectable"],
                  detectable_alpha=row["detectable_alpha"], family_size=row["family_size"])
    return record


def fmt_p(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def fmt_detectable(value: float) -> str:
    return "none (rank test cannot reach α/m)" if math.isinf(value) else f"{value:.4f}"


COMPARISON_HEADER = ["a", "b", "metric", "n", "mean a − b", "95% CI (t)", "95% CI (bootstrap)", "d_z",
                     "p (t)", "p (rank)", "p (t), Holm", "p (rank), Holm", "verdict", "detectable (80%)"]


def comparison_cells(row: dict[str, Any]) -> list[str]:
    c = row.get("comparison")
    if c is None:
        return [row["a"], row["b"], row["metric"], "–", "–", "–", "–", "–", "–", "–", "–", "–",
                f"not compared: {row['skipped']}", "–"]
    n = f"{c.n_a} pairs" if c.paired else f"{c.n_a} + {c.n_b}, unpaired"
    return [row["a"], row["b"], row["metric"], n, f"{c.mean_diff:+.4f}", f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]",
            f"[{c.boot_low:+.4f}, {c.boot_high:+.4f}]", f"{c.effect_size:+.2f}", fmt_p(c.p_t), fmt_p(c.p_wilcoxon),
            fmt_p(row["p_t_holm"]), fmt_p(row["p_wilcoxon_holm"]), f"**{row['verdict']}**",
            fmt_detectable(row["detectable"])]


def family_sentence(rows: Sequence[dict[str, Any]], alpha: float) -> str:
    done = [r for r in rows if "comparison" in r]
    m = len(done)
    unpaired = sum(not r["comparison"].paired for r in done)
    text = (f"Family: Holm over the {m} comparison(s) of this table, separately for the t-test and the rank "
            f"test. Verdict: both Holm-adjusted p < {alpha:g} and both tests in the same direction (the rank "
            f"test's from W+ vs W- or U_a vs U_b); *a higher* / *a lower* give that direction. Paired: "
            f"paired t + exact Wilcoxon signed-rank over the seeds both strategies completed. "
            f"Detectable: the smallest |a − b| the t-test finds with {POWER:.0%} power at α/m = "
            f"{alpha:g}/{m} = {alpha / max(m, 1):.3g}, from the observed spread.")
    if unpaired:
        text += (f" {unpaired} comparison(s) share no seed and are **unpaired**: Welch t + Mann–Whitney U "
                 "(exact for small groups).")
    if any(r["on"].startswith("integer") for r in done):
        text += " Accuracies and counts are compared as integer counts (value × test/samples), so equal counts tie."
    return text


# --- ranks across settings --------------------------------------------------------------------------

def rank_analysis(strategies: Sequence[Strategy], task: str, metric: str, blocks: Sequence[str],
                  alpha: float = ALPHA) -> dict[str, Any] | None:
    """Friedman test + Nemenyi CD over the settings (values of ``blocks``) of one task, on the strategies
    present in every setting (mean over seeds), when there are ≥ 3 settings and ≥ 3 such strategies."""
    group = [s for s in strategies if s.task == task and s.values(metric)]
    settings: dict[str, dict[str, float]] = {}
    treatments: dict[str, dict[str, Any]] = {}
    def in_block(key: str) -> bool:
        return any(key.startswith(b) if b.endswith(".") else key == b for b in blocks)

    for s in group:
        block = {k: v for k, v in s.config.items() if in_block(k)}
        # named by its *.name values (the dataset), else by all its values
        setting = (" ".join(_fmt_value(v) for k, v in sorted(block.items()) if k.endswith("name"))
                   or json.dumps(block, sort_keys=True, default=str))
        rest = {k: v for k, v in s.config.items() if not in_block(k)}
        key = json.dumps(rest, sort_keys=True, default=str)
        treatments[key] = rest
        settings.setdefault(setting, {})[key] = mean_std(s.values(metric)).mean
    complete = [k for k in treatments if all(k in row for row in settings.values())]
    if len(settings) < 3 or len(complete) < 3:
        return None
    labelled = [Strategy(task=task, config=treatments[k]) for k in complete]
    label_strategies(labelled)
    names = [s.label for s in labelled]
    setting_names = sorted(settings)
    values = [[settings[name][k] for k in complete] for name in setting_names]
    f = friedman(values, names, setting_names, higher_is_better=metric not in LOWER_IS_BETTER, alpha=alpha)
    return {"metric": metric, "blocks": list(blocks), "friedman": f,
            "cliques": nemenyi_cliques(f.mean_ranks, f.critical_difference)}


def rank_lines(ranks: dict[str, Any]) -> list[str]:
    f = ranks["friedman"]
    lines = [f"Ranks on {ranks['metric']} (mean over seeds; 1 = best) in each setting of "
             f"{', '.join(ranks['blocks'])}:", "",
             "| strategy | " + " | ".join(f.settings) + " | mean rank |",
             "|---|" + "---:|" * (len(f.settings) + 1)]
    for j, name in sorted(enumerate(f.strategies), key=lambda x: f.mean_ranks[x[0]]):
        lines.append(f"| {name} | " + " | ".join(f"{row[j]:g}" for row in f.ranks) + f" | {f.mean_ranks[j]:.2f} |")
    lines += ["", f"Friedman test over {len(f.settings)} settings × {len(f.strategies)} strategies: "
                  f"χ²_F = {f.statistic:.3f}, p = {fmt_p(f.p)}; Nemenyi critical difference at α = {f.alpha:g}: "
                  f"{f.critical_difference:.2f} (strategies whose mean ranks differ by less are joined in the "
                  "diagram).", ""]
    return lines


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


def plot_final(strategies: Sequence[Strategy], metrics: Sequence[str], title: str = ""):
    return plots.plot_final([s.label for s in strategies], lambda i, m: strategies[i].values(m), metrics, title)


def plot_curves(strategies: Sequence[Strategy], metrics: Sequence[str], title: str = ""):
    curves = [[read_curves(r.path) for r in s.completed] for s in strategies]
    return plots.plot_curves([s.label for s in strategies], curves, metrics, title)


def reliability(strategy: Strategy) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The strategy's reliability bins pooled over its runs (counts summed, means weighted by count)."""
    bins = sorted({k.split("/")[2] for r in strategy.completed for k in r.summary.get("metrics", {})
                   if k.startswith("test/reliability/")})
    if not bins:
        return None
    count = np.zeros(len(bins))
    conf, freq = np.zeros(len(bins)), np.zeros(len(bins))
    for r in strategy.completed:
        for i, b in enumerate(bins):
            n = r.metric(f"test/reliability/{b}/count") or 0.0
            count[i] += n
            conf[i] += n * (r.metric(f"test/reliability/{b}/confidence") or 0.0)
            freq[i] += n * (r.metric(f"test/reliability/{b}/frequency") or 0.0)
    safe = np.maximum(count, 1)
    return conf / safe, freq / safe, count


def curve_metrics(metrics: Sequence[str]) -> list[str]:
    """``val/loss`` and the validation twins of the table's ``test/`` metrics."""
    return ["val/loss", *(f"val/{m.split('/', 1)[1]}" for m in metrics if m.startswith("test/"))]


# --- writing ------------------------------------------------------------------------------------------

def write_text_atomic(path: Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text))


save_figure = plots.save_figure


@dataclass
class Report:
    strategies: list[Strategy]
    skipped: list[Run]
    metrics_by_task: dict[str, list[str]]
    roots: list[Path]
    comparisons: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ranks: dict[str, dict[str, Any]] = field(default_factory=dict)
    alpha: float = ALPHA


def build_report(roots: Sequence[Path], metrics: Sequence[str] | None = None, baseline: str | None = None,
                 pairs: str | None = None, compare_metrics: Sequence[str] | None = None,
                 blocks: Sequence[str] = ("data.",), alpha: float = ALPHA) -> Report:
    roots = [Path(r) for r in roots]
    if baseline is not None and pairs is not None:
        raise UserError("--baseline and --pairs exclude each other; give one of them")
    if pairs is not None and pairs not in PAIRS:
        raise UserError(f"--pairs={pairs!r} is invalid; allowed: {', '.join(PAIRS)}")
    strategies, skipped = group_strategies(load_runs(roots))
    if baseline is not None and baseline not in {s.label for s in strategies}:
        raise UserError(f"--baseline={baseline!r} is not a strategy of these runs; strategies: "
                        + ", ".join(repr(s.label) for s in strategies))
    tasks = sorted({s.task for s in strategies})
    metrics_by_task = {t: main_metrics(strategies, t, metrics) for t in tasks}
    report = Report(strategies, skipped, metrics_by_task, roots, alpha=alpha)
    report.comparisons = compare_strategies(strategies, metrics_by_task, baseline, pairs, compare_metrics, alpha)
    for task, task_metrics in metrics_by_task.items():
        chosen = (compare_metrics or task_metrics)[:1]
        if chosen and (ranks := rank_analysis(strategies, task, chosen[0], list(blocks), alpha)):
            report.ranks[task] = ranks
    return report


def markdown(report: Report) -> str:
    lines = ["# lossbench report", "", f"Runs from: {', '.join(f'`{r}`' for r in report.roots)}.",
             "Metrics: mean ± sample std over completed runs (seeds); diverged and failed runs are counted, "
             "never averaged.", ""]
    for task, metrics in report.metrics_by_task.items():
        header = table_header(metrics)
        lines += [f"## {task}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
        rows = table_rows([s for s in report.strategies if s.task == task], metrics)
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        lines.append("")
        if task in report.comparisons:
            comps = report.comparisons[task]
            lines += [f"### {task}: comparisons", "", family_sentence(comps, report.alpha), "",
                      "| " + " | ".join(COMPARISON_HEADER) + " |",
                      "|---|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---|---:|"]
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in comparison_cells(r)) + " |"
                      for r in comps]
            lines.append("")
        if task in report.ranks:
            lines += [f"### {task}: ranks across settings", "", *rank_lines(report.ranks[task])]
    if report.skipped:
        lines += ["## Skipped combinations", "", *(f"- {line}" for line in skipped_lines(report.skipped)), ""]
    return "\n".join(lines)


def comparisons_csv(report: Report) -> str:
    records = [comparison_record(r) for rows in report.comparisons.values() for r in rows]
    fields = list(dict.fromkeys(k for rec in records for k in rec))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def report_json(report: Report) -> dict[str, Any]:
    strategies = []
    for s in report.strategies:
        entry = {"task": s.task, "strategy": s.label, "runs": len(s.completed), "diverged": s.count("diverged"),
                 "failed": s.count("failed"), "seeds": [r.seed for r in s.completed], "metrics": {}}
        for m in report.metrics_by_task.get(s.task, []):
            if (st := s.stats(m)) is not None:
                entry["metrics"][m] = {"mean": st.mean, "std": st.std if st.n > 1 else None, "n": st.n}
        strategies.append(entry)
    ranks = {task: {**r["friedman"].as_dict(), "metric": r["metric"], "blocks": r["blocks"],
                    "cliques": r["cliques"]} for task, r in report.ranks.items()}
    return {"roots": [str(r) for r in report.roots], "alpha": report.alpha, "power": POWER,
            "strategies": strategies, "comparisons": [comparison_record(r) for rows in report.comparisons.values()
                                                      for r in rows], "ranks": ranks}


def write_report(report: Report, out: Path) -> list[Path]:
    """``report.md``, ``report.csv``, ``report.json`` (+ ``comparisons.csv``) and the PNG plots into ``out``."""
    out = Path(out)
    written = [write_text_atomic(out / "report.md", markdown(report)),
               write_text_atomic(out / "report.csv", csv_text(report.strategies, report.metrics_by_task)),
               write_json_atomic(out / "report.json", report_json(report))]
    if report.comparisons:
        written.append(write_text_atomic(out / "comparisons.csv", comparisons_csv(report)))
    for task, metrics in report.metrics_by_task.items():
        strategies = [s for s in report.strategies if s.task == task]
        if metrics:
            written.append(save_figure(plot_final(strategies, metrics, f"{task}: final test metrics"),
                                       out / f"final_{task}.png"))
        fig = plot_curves(strategies, curve_metrics(metrics), f"{task}: validation curves")
        if fig is not None:
            written.append(save_figure(fig, out / f"curves_{task}.png"))
        done = [r for r in report.comparisons.get(task, []) if "comparison" in r]
        if done:
            rows = [{"label": f"{r['a']} − {r['b']} [{r['metric']}]", "mean": r["comparison"].mean_diff,
                     "low": r["comparison"].ci_low, "high": r["comparison"].ci_high, "verdict": r["verdict"],
                     "detectable": r["detectable"]} for r in done]
            written.append(save_figure(plots.plot_differences(
                rows, "mean difference a − b, 95% t CI (grey: ± the difference detectable with 80% power)"),
                out / f"differences_{task}.png"))
        if task in report.ranks:
            f = report.ranks[task]["friedman"]
            written.append(save_figure(plots.plot_critical_difference(
                f.strategies, f.mean_ranks, f.critical_difference, report.ranks[task]["cliques"],
                f"{task}: mean rank on {report.ranks[task]['metric']} over {len(f.settings)} settings "
                f"(Friedman p = {fmt_p(f.p)})"), out / f"cd_{task}.png"))
        panels = [(s.label, *bins) for s in strategies if (bins := reliability(s)) is not None]
        if panels:
            written.append(save_figure(plots.plot_reliability(
                panels, f"{task}: reliability of the per-label probabilities (all labels pooled)"),
                out / f"reliability_{task}.png"))
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


# --- W&B ------------------------------------------------------------------------------------------

def uses_wandb(report: Report) -> bool:
    return any(r.summary.get("config", {}).get("logger", {}).get("name") == "wandb"
               for s in report.strategies for r in s.runs)


def wandb_settings(report: Report) -> dict[str, Any]:
    """Project, entity, mode and group of the sweep's runs: ``logger.group`` when they set one, else
    ``sweep-<name of the sweep folder>`` as ``lossbench.loggers.wandb_group`` names a multirun."""
    loggers = [r.summary.get("config", {}).get("logger", {}) for s in report.strategies for r in s.runs]
    logger = next((lg for lg in loggers if lg.get("name") == "wandb"), loggers[0] if loggers else {})
    group = logger.get("group") or f"sweep-{report.roots[0].name}"
    return {"project": logger.get("project") or "lossbench", "entity": logger.get("entity"),
            "mode": logger.get("mode") or "auto", "group": group}


def log_to_wandb(report: Report, written: Sequence[Path], out: Path) -> str:
    """One W&B run (``job_type=report``) in the sweep's group holding the strategy and comparison tables
    (``wandb.Table``) and every PNG; returns the run's folder."""
    import wandb

    from lossbench.loggers import resolve_wandb_mode

    settings = wandb_settings(report)
    run = wandb.init(project=settings["project"], entity=settings["entity"], group=settings["group"],
                     job_type="report", name=f"report-{settings['group']}", dir=str(out),
                     mode=resolve_wandb_mode(settings["mode"]), reinit="create_new",
                     config={"roots": [str(r) for r in report.roots], "alpha": report.alpha},
                     settings=wandb.Settings(quiet=True))
    data: dict[str, Any] = {}
    for task, metrics in report.metrics_by_task.items():
        data[f"report/{task}/strategies"] = wandb.Table(columns=table_header(metrics), data=table_rows(
            [s for s in report.strategies if s.task == task], metrics))
        records = [comparison_record(r) for r in report.comparisons.get(task, [])]
        if records:
            columns = list(dict.fromkeys(k for rec in records for k in rec))
            data[f"report/{task}/comparisons"] = wandb.Table(
                columns=columns, data=[[_table_cell(rec.get(c)) for c in columns] for rec in records])
    for path in written:
        if path.suffix == ".png":
            data[f"report/{path.stem}"] = wandb.Image(str(path))
    run.log(data)
    verdicts = [r["verdict"] for rows in report.comparisons.values() for r in rows if "verdict" in r]
    run.summary.update({"comparisons": len(verdicts),
                        "significant": sum(not v.startswith("no significant") for v in verdicts)})
    folder = run.settings.sync_dir
    run.finish()
    return folder


def _table_cell(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lossbench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories (searched for summary.json)")
    parser.add_argument("--out", type=Path, help=f"report folder (default: <sweep dir>/{REPORT_DIR})")
    parser.add_argument("--metrics", nargs="+", help="test metrics to tabulate, e.g. test/f1_macro test/pred_count")
    parser.add_argument("--baseline", metavar="LABEL", help="compare every strategy with this one (its label "
                                                            "as the table shows it)")
    parser.add_argument("--pairs", choices=PAIRS, help="compare every pair of strategies")
    parser.add_argument("--compare", nargs="+", metavar="METRIC",
                        help="metrics to compare (default: the first tabulated metric of each task)")
    parser.add_argument("--blocks", nargs="+", default=["data."], metavar="KEY",
                        help="config keys (or prefixes ending in '.') whose values are the settings of the rank "
                             "analysis (default data.: each dataset with its options)")
    parser.add_argument("--alpha", type=float, default=ALPHA, help=f"family-wise error rate (default {ALPHA})")
    parser.add_argument("--wandb", choices=("auto", "on", "off"), default="auto",
                        help="log the report to W&B (auto: when the runs used logger=wandb)")
    args = parser.parse_args(argv)
    try:
        if args.out is None and len(args.dirs) > 1:
            raise UserError(f"{len(args.dirs)} directories given: pass --out DIR for the report")
        if not 0 < args.alpha < 1:
            raise UserError(f"--alpha={args.alpha} is invalid; allowed: a number between 0 and 1")
        report = build_report(args.dirs, args.metrics, args.baseline, args.pairs, args.compare, args.blocks,
                              args.alpha)
        print_tables(report.strategies, report.skipped, report.metrics_by_task)
        print_comparisons(report)
        out = args.out or args.dirs[0] / REPORT_DIR
        written = write_report(report, out)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report written to {written[0].parent}: {', '.join(p.name for p in written)}")
    if args.wandb == "on" or (args.wandb == "auto" and uses_wandb(report)):
        folder = log_to_wandb(report, written, out)
        print(f"report logged to W&B (job_type=report, group {wandb_settings(report)['group']}): {folder}")
    if wandb_dirs := offline_wandb_dirs(args.dirs):
        print(f"W&B offline runs in {len(wandb_dirs)} folder(s); upload them with:  "
              + sync_command(args.dirs, wandb_dirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
