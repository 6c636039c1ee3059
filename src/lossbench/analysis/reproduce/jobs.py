"""Jobs of a reproduction and the pool that trains them. ``train_jobs`` is the one place runs are
trained (a list of jobs in, one finished run directory per job out); ``run_jobs`` skips what is done
and shows progress around it.

By default the seeds of one setting (dataset, model, strategy, rate) train together as members
(``lossbench.members``: one process, one pass over the data, each seed its own run directory); with
``separate=True`` (``--separate``) every seed is its own process. In float32 members may differ from separate
runs in the last digits; the same command gives the same numbers either way (``--repeat-check``)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lossbench.analysis.reproduce.interrupt import in_workers
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
    setting: str = ""  # a protocol setting's name (its overrides, e.g. noise=...); "" without settings

    @property
    def key(self) -> str:
        loss = "_".join(o.split("=", 1)[1] for o in self.strategy.overrides).replace("/", "_")
        block = f"{self.dataset}/{self.model}" + (f"/{self.setting}" if self.setting else "")
        return f"{block}/{loss}-{self.strategy.optimizer}-lr{self.lr:g}-seed{self.seed}"


def job_overrides(protocol: Protocol, job: Job, device: str, data_root: str | None) -> list[str]:
    out = [f"experiment=reproduce_{protocol.preset}", f"data={job.dataset}", *protocol.datasets[job.dataset],
           *protocol.setting_overrides(job.setting), f"model={job.model}", *protocol.models[job.model],
           *job.strategy.overrides,
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


def train_group(overrides: list[str], parent: str, keys: list[str], threads: int) -> list[str]:
    """Train the seeds of one setting as members; member ``i`` lands in ``<runs>/<keys[i]>`` (the same
    folder a separate run of that job would have). Statuses in the order of ``keys``."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lossbench.members import train_members

    torch.set_num_threads(threads)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    try:
        # groups of one dataset and model share ``parent`` and run at the same time: no stack checkpoint there
        summaries = train_members(cfg, Path(parent), stack_checkpoint=False)
    except UserError:
        raise
    except Exception as err:  # the group crashed: each of its runs is recorded as failed, the others go on
        for key in keys:
            write_summary(Path(parent) / Path(key).name, {
                "status": "failed", "config": OmegaConf.to_container(cfg, resolve=True), "metrics": {},
                "error": f"{type(err).__name__}: {err}".splitlines()[0]})
        return ["failed"] * len(keys)
    return [s["status"] for s in summaries]


def member_groups(jobs: list[Job]) -> list[list[Job]]:
    """Jobs that differ only in their seed, in order of first appearance."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.dataset, job.model, job.setting, job.strategy.tuning_key, job.lr), []).append(job)
    return list(groups.values())


def group_overrides(protocol: Protocol, group: list[Job], device: str, data_root: str | None) -> list[str]:
    """The first job's overrides with every seed of the group as members, each member named by its job key
    (``run_name`` interpolates the member's own seed)."""
    first = group[0]
    stem = Path(first.key).name.rsplit("-seed", 1)[0]
    return [o for o in job_overrides(protocol, first, device, data_root) if not o.startswith("seed=")] + [
        f"seed={first.seed}", f"seeds=[{','.join(str(j.seed) for j in group)}]", f"run_name={stem}-seed${{seed}}"]


def train_jobs(jobs: list[Job], protocol: Protocol, runs: Path, device: str, n_jobs: int, data_root: str | None,
               threads: int, advance: Callable[[int], Any] = lambda n: None, separate: bool = False) -> list[str]:
    """Train every job into ``runs/<job.key>``, ``n_jobs`` processes at a time (spawned; in this process
    with ``n_jobs=1``): the seeds of one setting as members, or each job alone with ``separate=True``.
    ``advance(k)`` after every ``k`` finished jobs. Returns the statuses in the order of ``jobs``."""
    groups = [[j] for j in jobs] if separate else member_groups(jobs)
    tasks = []
    for group in groups:
        if len(group) == 1:
            tasks.append((train_one, (job_overrides(protocol, group[0], device, data_root), str(runs / group[0].key),
                                      threads), group))
        else:
            parent = runs / Path(group[0].key).parent
            tasks.append((train_group, (group_overrides(protocol, group, device, data_root), str(parent),
                                        [j.key for j in group], threads), group))
    index = {id(j): i for i, j in enumerate(jobs)}
    statuses = [""] * len(jobs)

    def record(group: list[Job], result) -> None:
        for job, status in zip(group, result if isinstance(result, list) else [result], strict=True):
            statuses[index[id(job)]] = status
        advance(len(group))

    if n_jobs == 1:
        for fn, args, group in tasks:
            record(group, fn(*args))
        return statuses
    # closed on the way out: a signal arriving here, not inside the pool, also stops the workers
    with contextlib.closing(in_workers([(fn, args) for fn, args, _ in tasks], n_jobs)) as results:
        for i, result in results:
            record(tasks[i][2], result)
    return statuses


def is_done(run_dir: Path) -> bool:
    path = run_dir / SUMMARY_FILE
    return path.exists() and read_summary(path).get("status") in DONE


def run_jobs(jobs: list[Job], protocol: Protocol, runs: Path, device: str, n_jobs: int,
             data_root: str | None, title: str, threads: int, separate: bool = False) -> int:
    """Train the jobs whose run directory has no finished summary; return how many were trained."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # strategies that share a configuration (say a tuned rate equal to the fixed one) share its runs
    todo = [j for j in {j.key: j for j in jobs}.values() if not is_done(runs / j.key)]
    for job in todo:  # a half-written run from a killed reproduction starts over
        shutil.rmtree(runs / job.key, ignore_errors=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, transient=False) as progress:
            task = progress.add_task(f"{title}: {len({j.key for j in jobs}) - len(todo)} done before",
                                     total=len(todo))
            train_jobs(todo, protocol, runs, device, n_jobs, data_root, threads,
                       lambda k: progress.advance(task, k), separate=separate)
    except BaseException:  # stopped: finished runs stay, unfinished ones leave nothing behind
        for job in todo:
            if not is_done(runs / job.key):
                shutil.rmtree(runs / job.key, ignore_errors=True)
        raise
    return len(todo)


def repeat_check(jobs: list[Job], protocol: Protocol, runs: Path, device: str, n_jobs: int,
                 data_root: str | None, count: int, threads: int, separate: bool = False) -> dict[str, Any]:
    """Train the first ``count`` seed runs (whole member groups) again in a fresh folder and compare every
    test metric."""
    picked: list[Job] = []
    # whole member groups (members trained with other seeds beside them are another command)
    for group in sorted([[j] for j in jobs] if separate else member_groups(jobs), key=lambda g: g[0].key):
        if len(picked) >= count:
            break
        picked += group
    again = runs / "repeat-check"
    shutil.rmtree(again, ignore_errors=True)
    run_jobs(picked, protocol, again, device, n_jobs, data_root, "repeat check", threads, separate)
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
