"""A reproduction stopped by SIGTERM (``--profile quick``, two worker processes): every worker gone within
seconds, the finished runs kept byte for byte, nothing half written, one line and exit code 128 + 15; the
same command then continues and ends with the numbers of a reproduction never stopped. And in seconds, with
tasks that only sleep: each stop signal stops the pool (workers and the processes they started), and one
ignored by ``nohup`` stays ignored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from lossbench.paths import SUMMARY_FILE

from conftest import REPO

WORKERS_GONE_S = 10  # "a few seconds", with room for a loaded CI machine; a quick job alone takes longer


def command(root: Path, data_root: Path) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "reproduce.py"), "mnist", "--profile", "quick", "--jobs", "2",
            "--device", "cpu", "--data-root", str(data_root), "--runs", str(root / "runs"),
            "--out", str(root / "report")]


def finished(runs: Path) -> dict[Path, bytes]:
    """The completed runs' summaries (path -> bytes)."""
    out = {}
    for path in runs.rglob(SUMMARY_FILE):
        data = path.read_bytes()
        if json.loads(data)["status"] == "completed":
            out[path] = data
    return out


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def in_groups(groups: set[int]) -> list[int]:
    """Live processes whose process group is one of ``groups`` (a worker and whatever it started)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) in groups and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return found


def pool_workers(pid: int) -> list[int]:
    found = []
    for child in psutil.Process(pid).children():
        try:
            if "multiprocessing.spawn" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


SLEEPERS = """
import os, subprocess, sys, time

from lossbench.analysis.reproduce.interrupt import Interrupted, in_workers, stop_signals_raise


def sleep(log):  # a worker that started a process of its own, as a data loader does
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {child.pid}\\n")
    time.sleep(600)


if __name__ == "__main__":
    try:
        with stop_signals_raise():
            for _ in in_workers([(sleep, (sys.argv[1],))] * 2, 2):
                pass
    except Interrupted as stop:
        sys.exit(stop.exit_code)
"""


def start_sleepers(tmp_path, ignored: tuple = ()) -> tuple[subprocess.Popen, list[int]]:
    """The script above, once both workers and their children run; (process, worker and child pids). It
    starts with the ``ignored`` signals ignored and the others at their defaults (pytest itself may run in
    the background, where a shell has it ignore SIGINT)."""
    def dispositions():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN if sig in ignored else signal.SIG_DFL)

    (tmp_path / "sleepers.py").write_text(SLEEPERS)
    log = tmp_path / "pids.txt"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "sleepers.py"), str(log)], preexec_fn=dispositions)
    deadline = time.monotonic() + 120
    while not (log.exists() and len(log.read_text().splitlines()) == 2):
        assert proc.poll() is None and time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.1)
    return proc, [int(pid) for line in log.read_text().splitlines() for pid in line.split()]


@pytest.mark.slow  # three processes importing lossbench: seconds each
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_each_stop_signal_stops_every_worker_and_what_it_started(signum, tmp_path):
    proc, pids = start_sleepers(tmp_path)
    try:
        start = time.monotonic()
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == 128 + signum
        assert time.monotonic() - start < WORKERS_GONE_S
        assert not [pid for pid in pids if alive(pid)]
    finally:
        for pid in [proc.pid, *pids]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_sighup_ignored_by_nohup_stays_ignored(tmp_path):
    proc, pids = start_sleepers(tmp_path, ignored=(signal.SIGHUP,))
    try:
        proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert proc.poll() is None and all(alive(pid) for pid in pids)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        for pid in [proc.pid, *pids]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_sigterm_stops_every_worker_keeps_finished_runs_and_the_same_command_continues(mnist_root, tmp_path):
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    runs = stopped / "runs"
    stopped.mkdir()
    with open(stopped / "out.txt", "w") as out, open(stopped / "err.txt", "w") as err:
        proc = subprocess.Popen(command(stopped, mnist_root), stdout=out, stderr=err, cwd=tmp_path)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while not (finished(runs) and len(workers := pool_workers(proc.pid)) == 2):
            assert proc.poll() is None, "the reproduction ended before it was stopped"
            assert time.monotonic() < deadline, "no run finished in time"
            time.sleep(0.2)
        kept = finished(runs)
        # each worker leads a process group of its own, not the one of the command
        assert {os.getpgid(w) for w in workers} == set(workers) and os.getpgid(proc.pid) not in workers

        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        while in_groups(set(workers)) or any(alive(w) for w in workers):
            assert time.monotonic() - start < WORKERS_GONE_S, f"workers still alive: {in_groups(set(workers))}"
            time.sleep(0.1)
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    finally:
        for pid in in_groups(set(workers)) + [proc.pid, *workers]:  # nothing outlives a failed test
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert (stopped / "err.txt").read_text().splitlines() == [
        f"stopped by SIGTERM: every finished run is kept under {runs}; the same command continues"]

    # the finished runs are untouched; every other run folder is gone; no temporary file is left
    after = finished(runs)
    assert {p: after.get(p) for p in kept} == kept
    run_dirs = {p.parent for p in runs.rglob("*") if p.is_file() and ".hydra" not in p.parts}
    assert run_dirs == {p.parent for p in after}
    assert not [p for p in runs.rglob("*") if p.name.startswith(".") and p.name != ".hydra"]
    assert not (stopped / "report").exists()

    # the same command continues: only the rest is trained, and the numbers are an unstopped run's
    again = subprocess.run(command(stopped, mnist_root), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    reference = subprocess.run(command(whole, mnist_root), cwd=tmp_path, capture_output=True, text=True,
                               timeout=600)
    assert reference.returncode == 0, reference.stderr
    resumed, full = (json.loads((d / "report" / "results.json").read_text()) for d in (stopped, whole))
    assert 0 < resumed["trained_now"] == full["trained_now"] - len(after)
    assert {p: p.read_bytes() for p in kept} == kept  # not trained again
    assert resumed["runs"] == full["runs"]
    assert (stopped / "report" / "runs.csv").read_text() == (whole / "report" / "runs.csv").read_text()
