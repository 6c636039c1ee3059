"""Reproduce the forum's claims (issue 10): seed-paired runs, paired statistics, a report.

``python scripts/reproduce.py mnist`` (claim 1: CE vs BCE on MNIST / Fashion-MNIST) and
``python scripts/reproduce.py multilabel`` (claim 2). The protocol lives in
``configs/experiment/reproduce_<name>.yaml`` under ``reproduce:``; the rest of that file is an ordinary
Hydra experiment that every run is composed with. ``--profile cpu`` (``reproduce.cpu:``) and
``--profile quick`` (``reproduce.quick:``) replace some of its keys: smaller runs sized for a 2-core CPU
(under an hour per claim) and for smoke tests (seconds). Steps:

1. **tune** -- each strategy whose ``lr`` is ``tuned`` trains once per rate of its optimizer's grid with
   ``tune_seed``; the rate with the best final ``select_by`` value on the validation split wins (ties: the
   smaller rate);
2. **seeds** -- every strategy trains once per seed at its rate; a seed fixes initial weights and batch
   order, so strategies are paired by seed;
3. **report** -- mean ± std per strategy, paired differences with 95% CIs, paired t and Wilcoxon tests,
   and a verdict per comparison (:mod:`lossbench.stats`), written as Markdown, CSV, JSON and PNG plots.

Each run is an ordinary run directory with ``summary.json`` under ``--runs``; a run whose summary exists
is not trained again, so a killed reproduction continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import platform
import resource
import shutil
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lossbench.errors import ConfigError, UserError
from lossbench.paths import CONFIG_DIR, METRICS_FILE
from lossbench.stats import mean_std, paired_test, verdict
from lossbench.summary import git_commit, read_summary, write_json_atomic, write_summary

PRESETS = ("mnist", "multilabel")
PROFILES = ("full", "cpu", "quick")  # full: the protocol as written; cpu / quick: its reproduce.<profile> keys
DONE = ("completed", "diverged")
# metric -> (column title, display scale, decimals); differences use the same scale
METRICS = {
    "test/acc": ("acc %", 100, 2),
    "test/errors": ("test errors", 1, 1),
    "test/nll": ("NLL", 1, 4),
    "test/ece": ("ECE %", 100, 2),
    "test/exact_match": ("exact match %", 100, 2),
    "test/f1_macro": ("macro-F1 %", 100, 2),
    "test/f1_micro": ("micro-F1 %", 100, 2),
    "test/map": ("mAP %", 100, 2),
    "test/pred_count": ("predicted labels", 1, 3),
    "test/true_count": ("true labels", 1, 3),
    "val/acc": ("val acc %", 100, 2),
    "val/f1_macro": ("val macro-F1 %", 100, 2),
}


# -- the protocol ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Strategy:
    name: str
    label: str
    overrides: tuple[str, ...]
    optimizer: str
    lr: float | str  # a number, or "tuned"

    @property
    def loss(self) -> str:
        return next(o.split("=", 1)[1] for o in self.overrides if o.startswith("loss="))

    @property
    def tuning_key(self) -> tuple:
        return (self.overrides, self.optimizer)


@dataclass
class Protocol:
    preset: str
    title: str
    claim_text: str
    datasets: dict[str, list[str]]
    models: dict[str, list[str]]
    seeds: list[int]
    tune_seed: int
    select_by: str
    lr_grid: dict[str, list[float]]
    strategies: dict[str, Strategy]
    table_metrics: list[str]
    comparisons: list[dict[str, str]]
    profile: str = "full"
    overrides: list[str] = field(default_factory=list)  # extra training overrides of the profile
    missing: list[str] = field(default_factory=list)  # what this checkout lacks, reported as such


def load_protocol(preset: str, quick: bool = False, profile: str | None = None) -> Protocol:
    """The protocol of ``preset``; ``profile`` cpu/quick (``quick=True`` is ``profile="quick"``) replaces
    the keys its ``reproduce.<profile>`` section gives."""
    profile = profile or ("quick" if quick else "full")
    if preset not in PRESETS:
        raise ConfigError(f"preset {preset!r} is unknown; available: {', '.join(PRESETS)}")
    if profile not in PROFILES:
        raise ConfigError(f"--profile={profile!r} is invalid; allowed: {', '.join(PROFILES)}")
    spec = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "experiment" / f"reproduce_{preset}.yaml").reproduce)
    if profile != "full":
        spec.update(spec.get(profile, {}))
        names = set(spec.get("strategies") or {}) | {f"{lo}+{o}" for lo in spec.get("losses") or {}
                                                     for o in spec.get("optimizers") or []}
        spec["comparisons"] = [c for c in spec["comparisons"] if {c["a"], c["b"]} <= names]
    strategies: dict[str, Strategy] = {}
    for name, s in (spec.get("strategies") or {}).items():
        strategies[name] = Strategy(name, s["label"], tuple(s["overrides"]), s["optimizer"], s["lr"])
    for loss, s in (spec.get("losses") or {}).items():
        for opt in spec["optimizers"]:
            name = f"{loss}+{opt}"
            strategies[name] = Strategy(name, s["label"], tuple(s["overrides"]), opt, "tuned")
    protocol = Protocol(
        preset=preset, title=spec["title"], claim_text=spec.get("claim_text", ""), datasets=spec["datasets"],
        models=spec["models"], seeds=list(spec["seeds"]), tune_seed=spec["tune_seed"],
        select_by=spec["select_by"], lr_grid=spec["lr_grid"], strategies=strategies,
        table_metrics=spec["table_metrics"], comparisons=spec["comparisons"], profile=profile,
        overrides=list(spec.get("overrides", [])) if profile != "full" else [],
    )
    drop_unavailable(protocol)
    return protocol


def drop_unavailable(protocol: Protocol) -> None:
    """Datasets and losses other engineers have not landed yet are left out and listed as missing."""
    from lossbench import data, losses

    for name in list(protocol.datasets):
        if name not in data.available():
            protocol.missing.append(f"dataset {name} (not in this checkout's lossbench.data)")
            del protocol.datasets[name]
    for name, s in list(protocol.strategies.items()):
        if s.loss not in losses.available():
            protocol.missing.append(f"strategy {name} (loss {s.loss} not in this checkout's lossbench.losses)")
            del protocol.strategies[name]


# -- jobs -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    dataset: str
    model: str
    strategy: Strategy
    lr: float
    seed: int

    @property
    def key(self) -> str:
        loss = "_".join(o.split("=", 1)[1] for o in self.strategy.overrides).replace("/", "_")
        return f"{self.dataset}/{self.model}/{loss}-{self.strategy.optimizer}-lr{self.lr:g}-seed{self.seed}"


def job_overrides(protocol: Protocol, job: Job, device: str, data_root: str | None) -> list[str]:
    out = [f"experiment=reproduce_{protocol.preset}", f"data={job.dataset}", *protocol.datasets[job.dataset],
           f"model={job.model}", *protocol.models[job.model], *job.strategy.overrides,
           f"optimizer={job.strategy.optimizer}", f"optimizer.lr={job.lr}", f"seed={job.seed}",
           f"trainer={device}", *protocol.overrides]
    if data_root and job.dataset != "synthetic":
        out.append(f"data.root={data_root}")
    return out


def _train_job(overrides: list[str], run_dir: str, threads: int) -> str:
    """Runs in a worker process (or in-process with ``--jobs 1``)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lossbench.engine import train

    torch.set_num_threads(threads)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    run_path = Path(run_dir)
    try:
        return train(cfg, run_path)["status"]
    except UserError:
        raise
    except Exception as err:  # one crashed run is recorded and reported; the others go on
        write_summary(run_path, {"status": "failed", "config": OmegaConf.to_container(cfg, resolve=True),
                                 "metrics": {}, "error": f"{type(err).__name__}: {err}".splitlines()[0]})
        return "failed"


def is_done(run_dir: Path) -> bool:
    path = run_dir / "summary.json"
    return path.exists() and read_summary(path).get("status") in DONE


def run_jobs(jobs: list[Job], protocol: Protocol, runs: Path, device: str, n_jobs: int,
             data_root: str | None, title: str, threads: int) -> int:
    """Train the jobs whose run directory has no finished summary; return how many were trained."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # strategies that share a configuration (say a tuned rate equal to the fixed one) share its runs
    todo = [j for j in {j.key: j for j in jobs}.values() if not is_done(runs / j.key)]
    for job in todo:  # a half-written run from a killed reproduction starts over
        shutil.rmtree(runs / job.key, ignore_errors=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(f"{title}: {len({j.key for j in jobs}) - len(todo)} done before", total=len(todo))
        args = [(job_overrides(protocol, j, device, data_root), str(runs / j.key), threads) for j in todo]
        if n_jobs == 1:
            for a in args:
                _train_job(*a)
                progress.advance(task)
        else:
            with ProcessPoolExecutor(n_jobs, mp_context=get_context("spawn")) as pool:
                for future in as_completed([pool.submit(_train_job, *a) for a in args]):
                    future.result()
                    progress.advance(task)
    return len(todo)


def last_logged(run_dir: Path, metric: str) -> float:
    """The last value of ``metric`` in the run's ``metrics.csv`` (-inf if it never got one)."""
    path = run_dir / METRICS_FILE
    value = -math.inf
    if path.exists():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get(metric):
                    value = float(row[metric])
    return value


def tuning_jobs(protocol: Protocol) -> dict[tuple, list[Job]]:
    out: dict[tuple, list[Job]] = {}
    for dataset in protocol.datasets:
        for model in protocol.models:
            for s in protocol.strategies.values():
                key = (dataset, model, s.tuning_key)
                if s.lr != "tuned" or key in out or len(protocol.lr_grid[s.optimizer]) < 2:
                    continue  # a fixed rate, already tuned, or a one-rate grid: nothing to tune
                out[key] = [Job(dataset, model, s, lr, protocol.tune_seed) for lr in protocol.lr_grid[s.optimizer]]
    return out


def choose_rates(protocol: Protocol, tuning: dict[tuple, list[Job]], runs: Path) -> dict[tuple, dict]:
    chosen = {}
    for key, jobs in tuning.items():
        scores = {job.lr: last_logged(runs / job.key, protocol.select_by) for job in jobs}
        best = max(sorted(scores), key=lambda lr: scores[lr])  # sorted + max: ties go to the smaller rate
        chosen[key] = {"lr": best, "scores": scores}
    return chosen


def seed_jobs(protocol: Protocol, chosen: dict[tuple, dict]) -> list[Job]:
    jobs = []
    for dataset in protocol.datasets:
        for model in protocol.models:
            for s in protocol.strategies.values():
                key = (dataset, model, s.tuning_key)
                lr = float(s.lr) if s.lr != "tuned" else (
                    chosen[key]["lr"] if key in chosen else protocol.lr_grid[s.optimizer][0])
                jobs += [Job(dataset, model, s, lr, seed) for seed in protocol.seeds]
    return jobs


# -- collecting and the statistics ---------------------------------------------------------------
def test_sizes(protocol: Protocol, data_root: str | None) -> dict[str, int]:
    """Test-set size per dataset, for exact error counts."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lossbench.build import build_datamodule

    sizes = {}
    for dataset in protocol.datasets:
        overrides = [f"experiment=reproduce_{protocol.preset}", f"data={dataset}", *protocol.datasets[dataset],
                     *protocol.overrides] + ([f"data.root={data_root}"] if data_root and dataset != "synthetic" else [])
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
        sizes[dataset] = build_datamodule(cfg).describe()["sizes"]["test"]
    return sizes


def collect(jobs: list[Job], runs: Path, sizes: dict[str, int]) -> list[dict[str, Any]]:
    rows = []
    for job in jobs:
        summary = read_summary(runs / job.key)
        metrics = dict(summary.get("metrics") or {})
        if "test/acc" in metrics and metrics["test/acc"] is not None:
            metrics["test/errors"] = round((1.0 - metrics["test/acc"]) * sizes[job.dataset])
        rows.append({"dataset": job.dataset, "model": job.model, "strategy": job.strategy.name,
                     "optimizer": job.strategy.optimizer, "lr": job.lr, "seed": job.seed,
                     "status": summary["status"], "test_size": sizes.get(job.dataset), "run": job.key, **metrics})
    return rows


def values(rows: list[dict], dataset: str, model: str, strategy: str, metric: str) -> list[float | None]:
    chosen = sorted((r for r in rows if (r["dataset"], r["model"], r["strategy"]) == (dataset, model, strategy)),
                    key=lambda r: r["seed"])
    return [r.get(metric) for r in chosen]


def analyse(protocol: Protocol, rows: list[dict]) -> list[dict[str, Any]]:
    results = []
    for dataset in protocol.datasets:
        for model in protocol.models:
            for comp in protocol.comparisons:
                entry = {"dataset": dataset, "model": model, **comp}
                if comp["a"] not in protocol.strategies or comp["b"] not in protocol.strategies:
                    entry["skipped"] = "a strategy of this comparison is not in this checkout"
                    results.append(entry)
                    continue
                a = values(rows, dataset, model, comp["a"], comp["metric"])
                b = values(rows, dataset, model, comp["b"], comp["metric"])
                if any(v is None for v in a + b):
                    entry["skipped"] = "a run diverged or failed, so the pairs are incomplete"
                else:
                    test = paired_test(a, b)
                    entry.update(test=test.as_dict(), verdict=verdict(test, comp["claim"]))
                results.append(entry)
    return results


# -- the report -----------------------------------------------------------------------------------
DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "synthetic": "synthetic multi-label",
                  "mnist_multi": "mnist_multi"}


def fmt(metric: str, value: float, signed: bool = False) -> str:
    _, scale, digits = METRICS.get(metric, (metric, 1, 4))
    return f"{value * scale:{'+' if signed else ''}.{digits}f}"


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def fmt_lr(lr: float) -> str:
    return f"{lr:g}"


def strategy_table(protocol: Protocol, rows: list[dict], dataset: str, model: str, chosen: dict) -> list[str]:
    heads = [METRICS.get(m, (m,))[0] for m in protocol.table_metrics]
    lines = ["| strategy | optimizer | rate | " + " | ".join(heads) + " |",
             "|---|---|---|" + "---:|" * len(heads)]
    for s in protocol.strategies.values():
        sel = [r for r in rows if (r["dataset"], r["model"], r["strategy"]) == (dataset, model, s.name)]
        if not sel:
            continue
        cells = []
        for metric in protocol.table_metrics:
            vals = [r.get(metric) for r in sel]
            good = [v for v in vals if v is not None]
            text = "–" if not good else (
                f"{mean_std(good).mean * METRICS[metric][1]:.{METRICS[metric][2]}f} ± "
                f"{mean_std(good).std * METRICS[metric][1]:.{METRICS[metric][2]}f}")
            if len(good) < len(vals):
                text += f" ({len(vals) - len(good)} of {len(vals)} diverged/failed)"
            cells.append(text)
        rate = fmt_lr(sel[0]["lr"]) + (" (tuned)" if s.lr == "tuned" else "")
        lines.append(f"| {s.label} | {s.optimizer} | {rate} | " + " | ".join(cells) + " |")
    return lines


def tuning_table(protocol: Protocol, chosen: dict, dataset: str, model: str) -> list[str]:
    entries = [(s, chosen[(dataset, model, s.tuning_key)]) for s in protocol.strategies.values()
               if s.lr == "tuned" and (dataset, model, s.tuning_key) in chosen]
    seen, lines = set(), []
    for s, c in entries:
        if s.tuning_key in seen:
            continue
        seen.add(s.tuning_key)
        scores = ", ".join(("**" if lr == c["lr"] else "") + f"{fmt_lr(lr)}: " +
                           ("diverged" if math.isinf(v) else fmt(protocol.select_by, v)) +
                           ("**" if lr == c["lr"] else "") for lr, v in sorted(c["scores"].items()))
        lines.append(f"| {s.label.split(',')[0]} | {s.optimizer} | {scores} |")
    if not lines:
        return []
    title = METRICS.get(protocol.select_by, (protocol.select_by,))[0]
    return [f"| loss | optimizer | {title} at each rate (chosen in bold) |", "|---|---|---|", *lines]


def comparison_table(protocol: Protocol, results: list[dict], dataset: str, model: str) -> list[str]:
    lines = ["| claim (a vs b) | metric | mean a − b | 95% CI | t-test p | Wilcoxon p | verdict |",
             "|---|---|---:|---|---:|---:|---|"]
    for r in results:
        if (r["dataset"], r["model"]) != (dataset, model):
            continue
        title = METRICS.get(r["metric"], (r["metric"],))[0]
        if "skipped" in r:
            lines.append(f"| {r['label']} | {title} | – | – | – | – | not run: {r['skipped']} |")
            continue
        t = r["test"]
        lines.append(f"| {r['label']} | {title} | {fmt(r['metric'], t['mean_diff'], True)} | "
                     f"[{fmt(r['metric'], t['ci_low'], True)}, {fmt(r['metric'], t['ci_high'], True)}] | "
                     f"{fmt_p(t['t_p'])} | {fmt_p(t['wilcoxon_p'])} | **{r['verdict']}** |")
    return lines


def plot(protocol: Protocol, rows: list[dict], results: list[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    metric = protocol.comparisons[0]["metric"]
    scale = METRICS[metric][1]
    names = [s for s in protocol.strategies]
    for dataset in protocol.datasets:
        fig, axes = plt.subplots(1, len(protocol.models), figsize=(max(6, 0.7 * len(names)) * len(protocol.models), 4.5),
                                 squeeze=False)
        for ax, model in zip(axes[0], protocol.models, strict=True):
            for seed in protocol.seeds:
                ys = [next((r.get(metric) for r in rows if (r["dataset"], r["model"], r["strategy"], r["seed"])
                            == (dataset, model, name, seed)), None) for name in names]
                pts = [(i, y * scale) for i, y in enumerate(ys) if y is not None]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", alpha=0.5, lw=0.8, ms=3)
            ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
            ax.set_title(f"{DATASET_TITLES.get(dataset, dataset)}, {model}: one line per seed", fontsize=9)
            ax.set_ylabel(METRICS[metric][0])
            ax.grid(alpha=0.3)
        fig.tight_layout()
        name = f"per_seed_{dataset}.png"
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        files.append(name)
    done = [r for r in results if "test" in r]
    if done:
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(done) + 1.2))
        for i, r in enumerate(done):
            t, s = r["test"], METRICS[r["metric"]][1]
            color = {"supported": "tab:green", "contradicted": "tab:red"}.get(r["verdict"], "tab:gray")
            ax.errorbar(t["mean_diff"] * s, i, xerr=[[(t["mean_diff"] - t["ci_low"]) * s],
                                                      [(t["ci_high"] - t["mean_diff"]) * s]],
                        fmt="o", color=color, capsize=3)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(done)), [f"{r['dataset']}/{r['model']}: {r['label']} [{METRICS[r['metric']][0]}]"
                                          for r in done], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("mean paired difference a − b, 95% CI (green: claim supported, red: contradicted)")
        fig.tight_layout()
        fig.savefig(out / "differences.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        files.append("differences.png")
    return files


def machine(device: str) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{os.cpu_count()} vCPU {cpu}"
    if device == "gpu" and torch.cuda.is_available():
        text = f"{torch.cuda.get_device_name(0)} GPU, {text}"
    return f"{text}; torch {torch.__version__}, Python {platform.python_version()}"


def write_report(protocol: Protocol, rows: list[dict], chosen: dict, results: list[dict], out: Path,
                 context: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k.startswith("test/") or k.startswith("val/"), k))
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tuning = [{"dataset": k[0], "model": k[1], "overrides": list(k[2][0]), "optimizer": k[2][1], "chosen_lr": v["lr"],
               "scores": {fmt_lr(lr): (None if math.isinf(s) else s) for lr, s in v["scores"].items()}}
              for k, v in chosen.items()]
    write_json_atomic(out / "results.json", {**context, "tuning": tuning, "comparisons": results, "runs": rows})
    pictures = plot(protocol, rows, results, out)

    md = [f"# {protocol.title}", "", protocol.claim_text, "",
          f"- command: `{context['command']}`", f"- machine: {context['machine']}",
          f"- date (UTC): {context['date']}",
          f"- lossbench commit: {context['git_commit'] or 'unknown (the checkout it ran in had no git metadata)'}",
          f"- wall time: {duration(context['wall_time_s'])} from start to report, {context['trained_now']} runs "
          f"trained by this command, {context['jobs']} at a time with {context['threads']} torch thread(s) each; "
          f"{context['cpu_time_s']:.0f} CPU seconds (user + system, all processes); load average (1 min) "
          f"{context['load_average']['start']} at the start, {context['load_average']['end']} at the end",
          f"- runs: {len(rows)} seed runs + {sum(len(v['scores']) for v in chosen.values())} tuning runs; "
          f"seeds {protocol.seeds}; rates chosen by final {protocol.select_by} with seed {protocol.tune_seed}",
          f"- training settings: `configs/experiment/reproduce_{protocol.preset}.yaml`"
          + (f", profile `{protocol.profile}` (its `reproduce.{protocol.profile}` keys)" if protocol.profile != "full"
             else "")
          + (f" + `{' '.join(protocol.overrides)}`" if protocol.overrides else ""),
          "- per dataset / model overrides: " + "; ".join(
              f"{name}: `{' '.join(o)}`" for name, o in {**protocol.datasets, **protocol.models}.items() if o)
          if any({**protocol.datasets, **protocol.models}.values()) else "- per dataset / model overrides: none",
          "- statistics: mean ± sample std over seeds; paired difference a − b per seed with a Student-t 95% CI; "
          "two-sided paired t-test and Wilcoxon signed-rank test; verdict on the stated claim: *supported* / "
          "*contradicted* when both p < 0.05, else *no significant difference* (`lossbench/stats.py`)."]
    if protocol.missing:
        md.append("- not in this checkout, so not run: " + "; ".join(protocol.missing))
    if context.get("repeat_check"):
        md.append(f"- repeatability: {context['repeat_check']['text']}")
    md.append("")
    for dataset in protocol.datasets:
        for model in protocol.models:
            md += [f"## {DATASET_TITLES.get(dataset, dataset)}, {model}", ""]
            tune = tuning_table(protocol, chosen, dataset, model)
            if tune:
                md += ["Rate tuning (validation split):", "", *tune, ""]
            md += [*strategy_table(protocol, rows, dataset, model, chosen), "",
                   *comparison_table(protocol, results, dataset, model), ""]
    md += ["## Plots", ""] + [f"![{p}]({p})" for p in pictures] + [""]
    md += ["Files: `runs.csv` (one row per seed run, every test metric), `results.json` (the same plus the "
           "tuning scores and every test statistic).", ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path


def repeat_check(jobs: list[Job], protocol: Protocol, runs: Path, device: str, n_jobs: int,
                 data_root: str | None, count: int, threads: int) -> dict[str, Any]:
    """Train the first ``count`` seed runs again in a fresh folder and compare every test metric."""
    picked = sorted(jobs, key=lambda j: j.key)[:count]
    again = runs / "repeat-check"
    shutil.rmtree(again, ignore_errors=True)
    run_jobs(picked, protocol, again, device, n_jobs, data_root, "repeat check", threads)
    differing = []
    for job in picked:
        first, second = read_summary(runs / job.key)["metrics"], read_summary(again / job.key)["metrics"]
        if first != second:
            differing.append({"run": job.key, "max_abs_diff": max(abs((first.get(k) or 0) - (second.get(k) or 0))
                                                                   for k in set(first) | set(second))})
    text = (f"{len(picked)} seed runs trained a second time: every test metric identical"
            if not differing else f"{len(picked)} seed runs trained a second time: {len(differing)} differ "
                                  f"(largest difference {max(d['max_abs_diff'] for d in differing):.3g})")
    return {"runs": [j.key for j in picked], "differing": differing, "text": text}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (the worker processes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def reproduce(preset: str, out: Path, runs: Path, device: str = "auto", n_jobs: int | None = None,
              quick: bool = False, data_root: str | None = None, repeat: int = 0,
              command: str | None = None, profile: str | None = None, commit: str | None = None) -> dict[str, Any]:
    """Run the protocol of ``preset`` (profile full/cpu/quick) and write its report to ``out``.

    Default parallelism: up to 8 runs at a time on a GPU; on a CPU one run per core with one torch thread
    each (the quick profile: one run, in this process). A loaded 2-core machine runs two single-threaded
    runs far faster than one two-threaded run, whose threads wait on each other."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, inherited by workers
    if device == "auto":
        device = "gpu" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "gpu"):
        raise ConfigError(f"--device={device!r} is invalid; allowed: cpu, gpu, auto")
    protocol = load_protocol(preset, quick, profile)
    cores = os.cpu_count() or 1
    n_jobs = n_jobs or (min(8, cores) if device == "gpu" else 1 if protocol.profile == "quick" else cores)
    threads = max(1, cores // n_jobs)
    start, cpu_start, load_start = time.perf_counter(), cpu_seconds(), os.getloadavg()[0]
    # the code this command runs: the checkout at its start (later commits by others do not change it)
    start_commit = commit or os.environ.get("LOSSBENCH_COMMIT") or git_commit()
    # loads every dataset once here first, so parallel workers find the decompressed files ready
    sizes = test_sizes(protocol, data_root)
    tuning = tuning_jobs(protocol)
    trained = run_jobs([j for js in tuning.values() for j in js], protocol, runs, device, n_jobs, data_root,
                       "tune", threads)
    chosen = choose_rates(protocol, tuning, runs)
    jobs = seed_jobs(protocol, chosen)
    trained += run_jobs(jobs, protocol, runs, device, n_jobs, data_root, "seeds", threads)
    context = {
        "preset": preset, "profile": protocol.profile, "quick": protocol.profile == "quick", "device": device,
        "jobs": n_jobs, "threads": threads,
        "command": command or f"python scripts/reproduce.py {preset}" + (
            f" --profile {protocol.profile}" if protocol.profile != "full" else ""),
        "machine": machine(device), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "git_commit": start_commit or next(
            (read_summary(runs / j.key).get("git_commit") for j in jobs if (runs / j.key / "summary.json").exists()),
            None),
        "trained_now": trained, "wall_time_s": None, "missing": protocol.missing,
    }
    if repeat:
        context["repeat_check"] = repeat_check(jobs, protocol, runs, device, n_jobs, data_root, repeat, threads)
    rows = collect(jobs, runs, sizes)
    results = analyse(protocol, rows)
    context["wall_time_s"] = round(time.perf_counter() - start, 1)
    context["cpu_time_s"] = round(cpu_seconds() - cpu_start, 1)
    context["load_average"] = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}
    report = write_report(protocol, rows, chosen, results, out, context)
    return {"report": report, "trained": trained, "results": results, "rows": rows, "chosen": chosen,
            "context": context}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("preset", choices=PRESETS, help="mnist: claim 1 (CE vs BCE); multilabel: claim 2")
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="full (default): the protocol as written; cpu: sized for < 1 hour per claim on "
                             "2 CPU cores; quick: tiny settings (seconds)")
    parser.add_argument("--quick", action="store_true", help="same as --profile quick")
    parser.add_argument("--out", type=Path, help="report folder (default reports/reproduce_<preset>)")
    parser.add_argument("--runs", type=Path, help="run folder, reused to resume (default runs/reproduce_<preset>)")
    parser.add_argument("--device", default="auto", help="cpu, gpu or auto (default)")
    parser.add_argument("--jobs", type=int, help="runs trained at once (default: one per CPU core, one torch "
                                                 "thread each; up to 8 on a GPU; 1 with --profile quick)")
    parser.add_argument("--data-root", help="folder holding MNIST/raw and FashionMNIST/raw (default $LOSSBENCH_DATA)")
    parser.add_argument("--repeat-check", type=int, default=0, metavar="N",
                        help="train the first N seed runs again and report whether every metric is identical")
    parser.add_argument("--commit", help="the lossbench commit to state in the report (default $LOSSBENCH_COMMIT, "
                                         "else the one the runs recorded)")
    args = parser.parse_args(argv)
    if args.quick and args.profile not in (None, "quick"):
        print(f"error: --quick contradicts --profile {args.profile}; give one of them", file=sys.stderr)
        return 2
    profile = "quick" if args.quick else args.profile or "full"
    suffix = f"reproduce_{args.preset}" + ("" if profile == "full" else f"_{profile}")
    out = args.out or (Path("runs") / suffix / "report" if profile == "quick" else Path("reports") / suffix)
    runs = args.runs or Path("runs") / suffix
    command = "python scripts/reproduce.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
    try:
        if args.jobs is not None and args.jobs < 1:
            raise ConfigError(f"--jobs={args.jobs} is invalid; allowed: an integer >= 1")
        result = reproduce(args.preset, out, runs, args.device, args.jobs, False, args.data_root,
                           args.repeat_check, command, profile, args.commit)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for r in result["results"]:
        print(f"{r['dataset']}/{r['model']}: {r['label']}: {r.get('verdict', 'not run')}")
    print(f"report: {result['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
