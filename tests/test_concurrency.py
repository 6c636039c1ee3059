"""Concurrent runs: identical commands started at one moment get a folder each, and no two live
processes continue -- or train into -- one checkpoint (``lossbench.locks``; two real processes each time)."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from lossbench.engine import train
from lossbench.locks import CheckpointInUse, Locks, is_alive, lock_path, proc_stat, read_holder, this_process
from lossbench.paths import CHECKPOINT, HYDRA_CONFIG, SUMMARY_FILE, unique_folder_name
from lossbench.resume import find_checkpoint
from lossbench.summary import read_summary

from conftest import CONFIG_DIR, TINY, TINY_SYNTHETIC, compose_config, run_cli

RUN_NAME = "synthetic-sigmoid-bce_with_logits-seed0"
FOLDER_NAME = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\.\d{6}-(\d+)-[0-9a-f]{4}"
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}

# holds the lock of argv[1] for a run folder argv[2] until killed
HOLDER = """
import sys, time
from pathlib import Path
from lossbench.locks import Locks
Locks(Path(sys.argv[2])).hold(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(600)
"""


def test_folder_names_never_repeat_and_sort_by_start_time():
    names = [unique_folder_name() for _ in range(3000)]  # far more than one per microsecond
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(FOLDER_NAME, n) and n.split("-")[-2] == str(os.getpid()) for n in names)
    stamps = [n.rsplit("-", 2)[0] for n in names]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


def test_the_run_folder_is_resolved_once_per_config_and_differs_between_configs(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        a, b = (compose(config_name="train", overrides=[f"output_root={tmp_path}"], return_hydra_config=True)
                for _ in range(2))
    first = a.hydra.run.dir
    assert re.fullmatch(rf"{re.escape(str(tmp_path))}/{RUN_NAME}/{FOLDER_NAME}", first), first
    assert a.hydra.run.dir == first  # the job folder, its .hydra/ and DDP's other processes agree
    assert b.hydra.run.dir != first
    assert a.hydra.sweep.dir == a.hydra.sweep.dir != b.hydra.sweep.dir
    assert not list(tmp_path.iterdir())  # naming a folder makes none


@pytest.mark.slow
def test_identical_commands_started_together_get_a_folder_and_a_completed_summary_each(tmp_path):
    args = [f"output_root={tmp_path}", *TINY_SYNTHETIC, *TINY]
    procs = [subprocess.Popen([sys.executable, "-m", "lossbench.train", *args], cwd=tmp_path, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    folders = sorted((tmp_path / RUN_NAME).iterdir())
    assert len(folders) == 4, folders
    pids = {re.fullmatch(FOLDER_NAME, f.name).group(1) for f in folders}
    assert pids == {str(p.pid) for p in procs}  # one folder per process
    for folder in folders:
        summary = read_summary(folder)
        assert summary["status"] == "completed" and summary["run_dir"] == str(folder)
        assert "resumed_from" not in summary  # none continued another's (live) checkpoint
        with open(folder / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        # exactly one run's rows: 4 training steps, one validation, one test (epoch-level logging)
        assert sum(bool(r["val/loss"]) for r in rows) == 1 and sum(bool(r["test/loss"]) for r in rows) == 1
        assert (folder / CHECKPOINT).is_file() and not lock_path(folder / CHECKPOINT).exists()


def _interrupted_attempt(root: Path, name: str, overrides: list[str]) -> Path:
    """A real run folder that lost its summary: what a kill after the last checkpoint leaves."""
    run_dir = root / RUN_NAME / name
    cfg = compose_config(overrides)
    train(cfg, run_dir)
    (run_dir / SUMMARY_FILE).unlink()
    (run_dir / HYDRA_CONFIG).parent.mkdir()
    OmegaConf.save(cfg, run_dir / HYDRA_CONFIG)
    return run_dir / CHECKPOINT


def _hold(checkpoint: Path, holder_run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(checkpoint), str(holder_run_dir)], env=ENV,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_processes_checkpoint_is_passed_over_and_a_killed_ones_taken_over(tmp_path):
    overrides = [f"output_root={tmp_path}", *TINY_SYNTHETIC, *TINY]
    older = _interrupted_attempt(tmp_path, "1-older", overrides)
    newer = _interrupted_attempt(tmp_path, "2-newer", overrides)
    os.utime(older.parent.parent / HYDRA_CONFIG, (time.time() - 100, time.time() - 100))
    os.utime(older, (time.time() - 100, time.time() - 100))
    cfg = compose_config(overrides)
    holder = _hold(newer, tmp_path / "holder-run")
    try:
        mine = Locks(tmp_path / "this-run")
        found = mine.claim(newer)
        assert (found.pid, found.host, found.run_dir) == (holder.pid, socket.gethostname(),
                                                          str(tmp_path / "holder-run"))
        # auto: the newest attempt is running, not interrupted: the older one is continued
        assert find_checkpoint(cfg, mine.claim) == older
        mine.release()
        assert not lock_path(older).exists()
        with pytest.raises(CheckpointInUse, match=rf"^{re.escape(str(newer))} is in use by pid {holder.pid} on "
                                                  rf"host .*; wait .* resume=false \(if that process no longer "
                                                  rf"runs, delete {re.escape(str(lock_path(newer)))}\)$"):
            find_checkpoint(compose_config([*overrides, f"resume={newer}"]), mine.claim)
    finally:
        holder.kill()
        holder.wait()
    assert find_checkpoint(cfg, mine.claim) == newer  # its holder is gone: a stale lock, taken over
    assert read_holder(lock_path(newer)).pid == os.getpid()
    mine.release()
    assert not lock_path(newer).exists()


# tries to take the lock of argv[1] at the moment argv[2], for run folder argv[3]; keeps what it won a while
RACER = """
import sys, time
from pathlib import Path
from lossbench.locks import Locks
while time.time() < float(sys.argv[2]):
    pass
holder = Locks(Path(sys.argv[3])).claim(Path(sys.argv[1]))
print("won" if holder is None else "lost to " + holder.run_dir, flush=True)
time.sleep(2)
"""


def test_of_several_processes_finding_one_stale_lock_exactly_one_takes_it_over(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = replace(this_process(tmp_path / "killed-run"), pid=dead.pid, started=None)
    lock_path(checkpoint).write_text(json.dumps(asdict(stale)))
    start = time.time() + 3  # all started and waiting by then
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(checkpoint), str(start), str(tmp_path / f"r{i}")],
                               env=ENV, stdout=subprocess.PIPE, text=True) for i in range(6)]
    results = [p.communicate(timeout=120)[0].strip() for p in racers]
    winners = [i for i, r in enumerate(results) if r == "won"]
    assert len(winners) == 1, results
    assert all(r == f"lost to {tmp_path / f'r{winners[0]}'}" for r in results if r != "won"), results


# says "ready", then tries to take the lock of argv[1] for run folder argv[2]
WAITER = """
import sys
from pathlib import Path
from lossbench.locks import Locks
print("ready", flush=True)
holder = Locks(Path(sys.argv[2])).claim(Path(sys.argv[1]))
print("won" if holder is None else "lost to " + holder.run_dir, flush=True)
"""


def test_a_take_over_waits_while_another_process_checks_the_same_folder(tmp_path):
    """The check-and-take-over of a stale lock happens under ``flock`` of the checkpoint folder: while this
    process holds it (as one in the middle of its own take-over would), another waits, then sees the result."""
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(checkpoint).write_text(json.dumps(asdict(replace(this_process(tmp_path / "killed"), pid=dead.pid))))
    folder = os.open(checkpoint.parent, os.O_RDONLY)
    fcntl.flock(folder, fcntl.LOCK_EX)
    waiter = subprocess.Popen([sys.executable, "-c", WAITER, str(checkpoint), str(tmp_path / "waiter")], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert waiter.stdout.readline().strip() == "ready"
        time.sleep(1)
        assert waiter.poll() is None, "it took over the lock while another process was checking it"
        lock_path(checkpoint).write_text(json.dumps(asdict(this_process(tmp_path / "this-run"))))  # ours now
    finally:
        os.close(folder)  # releases the flock
    assert waiter.communicate(timeout=60)[0].strip() == f"lost to {tmp_path / 'this-run'}"


def test_which_holders_count_as_alive(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    me = this_process(tmp_path)
    assert is_alive(me)
    assert not is_alive(replace(me, started=me.started + 1))  # our pid, but a process started later: reused
    assert not is_alive(replace(me, boot_id="another-boot"))  # the host restarted since
    assert is_alive(replace(me, host=socket.gethostname() + "-elsewhere"))  # cannot be checked: live
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    holder = replace(me, pid=child.pid, started=proc_stat(child.pid)[1])
    assert is_alive(holder)
    child.kill()
    deadline = time.monotonic() + 10
    while proc_stat(child.pid)[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not is_alive(holder)  # a zombie: exited, not yet reaped
    child.wait()
    assert not is_alive(holder)  # gone


def test_a_requeued_slurm_job_takes_over_the_lock_of_its_earlier_incarnation(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    first = replace(this_process(tmp_path), host="node-that-was-preempted")  # live for all this host can tell
    assert is_alive(first)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # Slurm requeued the job: the first incarnation ended
    assert not is_alive(first)
    assert is_alive(replace(first, slurm_restart=1))  # the same incarnation: another process of this job
    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    assert is_alive(first)  # another job's lock: only the host rules apply


@pytest.mark.slow
def test_a_running_runs_checkpoint_is_passed_over_until_the_run_is_killed(tmp_path):
    root = tmp_path / "runs"
    # 5 epochs of 100 small steps: still training long after its first checkpoint
    args = [f"output_root={root}", "trainer.max_epochs=5", "trainer.progress_bar=none", "data.train_size=800",
            "data.val_size=64", "data.test_size=64", "data.batch_size=8", "trainer.limit_val_batches=1"]
    proc = subprocess.Popen([sys.executable, "-m", "lossbench.train", *args], cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (found := sorted(root.glob(f"{RUN_NAME}/*/{CHECKPOINT}"))):
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        [checkpoint] = found
        assert read_holder(lock_path(checkpoint)).pid == proc.pid  # taken before training began
        other = Locks(tmp_path / "another-run")
        assert find_checkpoint(compose_config(args), other.claim) is None  # running, not interrupted
        assert proc.poll() is None, "the run ended before the check: make it longer"
    finally:
        proc.kill()
        proc.wait()
    assert find_checkpoint(compose_config(args), other.claim) == checkpoint  # killed: continued
    other.release()


@pytest.mark.slow
def test_the_cli_passes_over_a_live_lock_names_its_holder_and_takes_over_a_stale_one(tmp_path):
    root = tmp_path / "runs"
    args = [f"output_root={root}", *TINY_SYNTHETIC, *TINY]
    checkpoint = _interrupted_attempt(root, "interrupted", args)
    holder = _hold(checkpoint, tmp_path / "holder-run")
    try:
        named = run_cli([*args, f"resume={checkpoint.parent.parent}"], cwd=tmp_path)
        assert named.returncode == 2
        assert re.fullmatch(rf"error: {re.escape(str(checkpoint))} is in use by pid {holder.pid} on host "
                            rf"{re.escape(socket.gethostname())} \(run folder {re.escape(str(tmp_path))}/holder-run, "
                            rf"since .*\); wait .*\n", named.stderr), named.stderr
        passed = run_cli(args, cwd=tmp_path)  # resume=auto
        assert passed.returncode == 0, passed.stderr[-3000:]
        assert "resuming from" not in passed.stdout + passed.stderr
        [new] = [p.parent for p in (root / RUN_NAME).glob("*/summary.json")]
        assert "resumed_from" not in read_summary(new) and read_summary(new)["status"] == "completed"
    finally:
        holder.kill()
        holder.wait()
    shutil.rmtree(new)  # so that auto looks at the interrupted attempt again
    taken = run_cli(args, cwd=tmp_path)
    assert taken.returncode == 0, taken.stderr[-3000:]
    out = taken.stdout + taken.stderr
    assert f"taking over the stale lock {lock_path(checkpoint)} of pid {holder.pid}" in out
    assert f"resuming from {checkpoint}" in out
    [resumed] = [p.parent for p in (root / RUN_NAME).glob("*/summary.json")]
    assert read_summary(resumed)["resumed_from"] == str(checkpoint)
    assert not lock_path(checkpoint).exists() and not lock_path(resumed / CHECKPOINT).exists()
