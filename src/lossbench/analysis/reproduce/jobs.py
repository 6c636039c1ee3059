"""Jobs of a reproduction and the pool that trains them. :func:`train_jobs` is the one place runs are
trained (a list of jobs in, one finished run directory per job out); :func:`run_jobs` skips what is done
and shows progress around it."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lossbench.analysis.reproduce.protocol import Protocol, Strategy
from lossbench.errors import UserError
from lossbench.paths import CONFIG_DIR, SUMMARY_FILE
from lossbench.summary import read_summary, write_summary

DONE = ("completed", "diverged")


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


def train_one(overrides: list[str], run_dir: str, threads: int) -> str:
    """Train one run (in a worker process, or in-process with one job at a time); its status."""
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


def train_jobs(jobs: list[Job], protocol: Protocol, runs: Path, device: str, n_jobs: int, data_root: str | None,
               threads: int, advance: Callable[[], Any] = lambda: None) -> list[str]:
    """Train every job into ``runs/<job.key>``, ``n_jobs`` at a time (spawned processes; in this process
    with ``n_jobs=1``); ``advance()`` after each. Returns the statuses in the order of ``jobs``."""
    args = [(job_overrides(protocol, j, device, data_root), str(runs / j.key), threads) for j in jobs]
    if n_jobs == 1:
        statuses = []
        for a in args:
            statuses.append(train_one(*a))
            advance()
        return statuses
    statuses = [""] * len(args)
    with ProcessPoolExecutor(n_jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(train_one, *a): i for i, a in enumerate(args)}
        for future in as_completed(futures):
            statuses[futures[future]] = future.result()
            advance()
    return statuses


def is_done(run_dir: Path) -> bool:
    path = run_dir / SUMMARY_FILE
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
        train_jobs(todo, protocol, runs, device, n_jobs, data_root, threads, lambda: progress.advance(task))
    return len(todo)


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
