"""Learning-rate tuning: each strategy whose ``lr`` is ``tuned`` trains once per rate of its optimizer's
grid with ``tune_seed``; the rate with the best final ``select_by`` value on the validation split wins
(ties: the smaller rate). Then every strategy's seed jobs at its rate. Each (dataset, model, setting) block
is tuned on its own: the keys are ``(dataset, model, setting, strategy.tuning_key)``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from lossbench.analysis.reproduce.jobs import Job
from lossbench.analysis.reproduce.protocol import Protocol
from lossbench.paths import METRICS_FILE


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
    for dataset, model, setting in protocol.blocks():
        for s in protocol.strategies_for(dataset):
            key = (dataset, model, setting, s.tuning_key)
            if s.lr != "tuned" or key in out or len(protocol.lr_grid[s.optimizer]) < 2:
                continue  # a fixed rate, already tuned, or a one-rate grid: nothing to tune
            out[key] = [Job(dataset, model, s, lr, protocol.tune_seed, setting) for lr in protocol.lr_grid[s.optimizer]]
    return out


def choose_rates(protocol: Protocol, tuning: dict[tuple, list[Job]], runs: Path) -> dict[tuple, dict]:
    chosen = {}
    for key, jobs in tuning.items():
        scores = {job.lr: last_logged(runs / job.key, protocol.select_for(job.dataset)) for job in jobs}
        best = max(sorted(scores), key=lambda lr: scores[lr])  # sorted + max: ties go to the smaller rate
        chosen[key] = {"lr": best, "scores": scores}
    return chosen


def seed_jobs(protocol: Protocol, chosen: dict[tuple, dict]) -> list[Job]:
    jobs = []
    for dataset, model, setting in protocol.blocks():
        for s in protocol.strategies_for(dataset):
            key = (dataset, model, setting, s.tuning_key)
            lr = float(s.lr) if s.lr != "tuned" else (
                chosen[key]["lr"] if key in chosen else protocol.lr_grid[s.optimizer][0])
            jobs += [Job(dataset, model, s, lr, seed, setting) for seed in protocol.seeds]
    return jobs
