"""``lossbench-reproduce`` / ``python scripts/reproduce.py``: run a protocol end to end, or recompute a
committed report's statistics from its ``results.json`` without retraining (``--reanalyse``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lossbench.analysis.reproduce.interrupt import Interrupted, stop_signals_raise
from lossbench.analysis.reproduce.jobs import repeat_check, run_jobs
from lossbench.analysis.reproduce.machine import cpu_seconds, machine
from lossbench.analysis.reproduce.protocol import PRESETS, PROFILES, load_protocol
from lossbench.analysis.reproduce.report import RESULTS_FILE, write_report
from lossbench.analysis.reproduce.results import analyse, collect, ranks, test_sizes, validation_curves
from lossbench.analysis.reproduce.tuning import choose_rates, seed_jobs, tuning_jobs
from lossbench.errors import ConfigError, DataError, UserError
from lossbench.paths import SUMMARY_FILE
from lossbench.summary import git_commit, read_summary


def reproduce(preset: str, out: Path, runs: Path, device: str = "auto", n_jobs: int | None = None,
              quick: bool = False, data_root: str | None = None, repeat: int = 0,
              command: str | None = None, profile: str | None = None, commit: str | None = None,
              separate: bool = False) -> dict[str, Any]:
    """Run the protocol of ``preset`` (profile full/cpu/quick) and write its report to ``out``. Each
    setting's seeds train as members in one process unless ``separate`` (then one process per run).

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
                       "tune", threads, separate=True)  # one seed per trial: nothing to stack
    chosen = choose_rates(protocol, tuning, runs)
    jobs = seed_jobs(protocol, chosen)
    trained += run_jobs(jobs, protocol, runs, device, n_jobs, data_root, "seeds", threads, separate=separate)
    context = {
        "preset": preset, "profile": protocol.profile, "quick": protocol.profile == "quick", "device": device,
        "jobs": n_jobs, "threads": threads,
        "command": command or f"python scripts/reproduce.py {preset}" + (
            f" --profile {protocol.profile}" if protocol.profile != "full" else ""),
        "machine": machine(device), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "git_commit": start_commit or next(
            (read_summary(runs / j.key).get("git_commit") for j in jobs if (runs / j.key / SUMMARY_FILE).exists()),
            None),
        "trained_now": trained, "wall_time_s": None, "missing": protocol.missing,
        "members": not separate,
    }
    if repeat:
        context["repeat_check"] = repeat_check(jobs, protocol, runs, device, n_jobs, data_root, repeat, threads,
                                               separate)
    rows = collect(jobs, runs, sizes)
    context["curves"] = validation_curves(protocol, jobs, runs)
    results = analyse(protocol, rows)
    rank = ranks(protocol, rows)
    context["wall_time_s"] = round(time.perf_counter() - start, 1)
    context["cpu_time_s"] = round(cpu_seconds() - cpu_start, 1)
    context["load_average"] = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}
    report = write_report(protocol, rows, chosen, results, rank, out, context)
    return {"report": report, "trained": trained, "results": results, "rows": rows, "chosen": chosen,
            "ranks": rank, "context": context}


CONTEXT_KEYS = ("preset", "profile", "quick", "device", "jobs", "threads", "command", "machine", "date",
                "git_commit", "trained_now", "wall_time_s", "missing", "repeat_check", "cpu_time_s", "load_average",
                "members", "curves")


def reanalyse(folder: Path, out: Path | None = None, command: str | None = None) -> dict[str, Any]:
    """Recompute the statistics of a report folder from its ``results.json`` (the runs and tuning scores
    as trained) with this checkout's ``lossbench.analysis.stats``, and rewrite the report (into
    ``out``, default the same folder). Nothing is trained; the run context (command, machine, wall time) is
    kept, and the report says it was recomputed."""
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass a report folder written by the reproduction")
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not readable JSON: {err}") from None
    protocol = load_protocol(stored["preset"], profile=stored.get("profile") or "full")
    rows = stored["runs"]
    unknown = sorted({r["strategy"] for r in rows} - set(protocol.strategies))
    if unknown:
        raise DataError(f"{path} has runs of strategies the protocol no longer defines: {', '.join(unknown)}")
    chosen = {}
    for t in stored.get("tuning", []):
        key = (t["dataset"], t["model"], t.get("setting", ""), (tuple(t["overrides"]), t["optimizer"]))
        chosen[key] = {"lr": t["chosen_lr"],
                       "scores": {float(lr): (-math.inf if s is None else s) for lr, s in t["scores"].items()}}
    context = {k: stored[k] for k in CONTEXT_KEYS if k in stored}
    context["reanalysed"] = {"command": command or f"python scripts/reproduce.py --reanalyse {folder}",
                             "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                             "git_commit": os.environ.get("LOSSBENCH_COMMIT") or git_commit()}
    results = analyse(protocol, rows)
    rank = ranks(protocol, rows)
    report = write_report(protocol, rows, chosen, results, rank, Path(out or folder), context)
    return {"report": report, "results": results, "rows": rows, "chosen": chosen, "ranks": rank, "context": context}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lossbench-reproduce", description="Reproduce the forum's claims with "
                                     "seed-paired runs and corrected statistics, or recompute a report.")
    parser.add_argument("preset", nargs="?", choices=PRESETS, help="mnist, mnist_converged: claim 1 (CE vs BCE); "
                        "multilabel, multilabel_converged: claim 2; noise: claim 3 (robust losses under label noise)")
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="full (default): the protocol as written; cpu: sized for 2 CPU cores (20 to 85 min "
                             "per claim); quick: tiny settings (seconds)")
    parser.add_argument("--quick", action="store_true", help="same as --profile quick")
    parser.add_argument("--reanalyse", type=Path, metavar="REPORT_DIR",
                        help="recompute the statistics of a report folder from its results.json, no training")
    parser.add_argument("--out", type=Path, help="report folder (default reports/reproduce_<preset>; with "
                                                 "--reanalyse, the folder itself)")
    parser.add_argument("--runs", type=Path, help="run folder, reused to resume (default runs/reproduce_<preset>)")
    parser.add_argument("--device", default="auto", help="cpu, gpu or auto (default)")
    parser.add_argument("--jobs", type=int, help="runs trained at once (default: one per CPU core, one torch "
                                                 "thread each; up to 8 on a GPU; 1 with --profile quick)")
    parser.add_argument("--data-root", help="folder holding MNIST/raw and FashionMNIST/raw (default $LOSSBENCH_DATA)")
    parser.add_argument("--repeat-check", type=int, default=0, metavar="N",
                        help="train the first N seed runs again and report whether every metric is identical")
    parser.add_argument("--separate", action="store_true",
                        help="one process per seed run instead of each setting's seeds trained together as members")
    parser.add_argument("--commit", help="the lossbench commit to state in the report (default $LOSSBENCH_COMMIT, "
                                         "else the one the runs recorded)")
    args = parser.parse_args(argv)
    command = "python scripts/reproduce.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
    try:
        with stop_signals_raise():
            result = run_command(args, command)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:  # by now the workers are stopped and unfinished runs removed (jobs.py)
        where = "" if args.reanalyse is not None else f" under {paths(args)[1]}; the same command continues"
        print(f"stopped by {stop}: every finished run is kept{where}", file=sys.stderr)
        return stop.exit_code
    for r in result["results"]:
        block = "/".join(x for x in (r["dataset"], r["model"], r.get("setting")) if x)
        print(f"{block}: {r['label']}: {r.get('verdict', 'not run')}")
    print(f"report: {result['report']}")
    return 0


def paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The report folder and the run folder of a reproduction's arguments."""
    profile = "quick" if args.quick else args.profile or "full"
    suffix = f"reproduce_{args.preset}" + ("" if profile == "full" else f"_{profile}")
    out = args.out or (Path("runs") / suffix / "report" if profile == "quick" else Path("reports") / suffix)
    return out, args.runs or Path("runs") / suffix


def run_command(args: argparse.Namespace, command: str) -> dict[str, Any]:
    if args.reanalyse is not None:
        if args.preset or args.profile or args.quick:
            raise UserError("--reanalyse takes the preset and profile from the report's results.json; "
                            "give no preset or --profile")
        return reanalyse(args.reanalyse, args.out, command)
    if args.preset is None:
        raise UserError("give a preset (mnist or multilabel) or --reanalyse REPORT_DIR")
    if args.quick and args.profile not in (None, "quick"):
        raise UserError(f"--quick contradicts --profile {args.profile}; give one of them")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs={args.jobs} is invalid; allowed: an integer >= 1")
    out, runs = paths(args)
    return reproduce(args.preset, out, runs, args.device, args.jobs, False, args.data_root, args.repeat_check,
                     command, "quick" if args.quick else args.profile or "full", args.commit, args.separate)


if __name__ == "__main__":
    sys.exit(main())
