"""Resume: a run killed with SIGKILL continues from its last checkpoint when the same command is run
again, and ends with exactly the metrics of an uninterrupted run (CPU). Plus which earlier attempt
``resume=auto|true|false|<path>`` picks (lossbench.resume)."""

from __future__ import annotations

import csv
import errno
import json
import os
import pickle
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lossbench.engine import train
from lossbench.errors import ConfigError, DataError
from lossbench.loggers import build_loggers
from lossbench.resume import atomic_checkpoint_io, checkpoint_info, find_checkpoint
from lossbench.summary import read_summary, write_atomic, write_json_atomic

from conftest import TINY, TINY_SYNTHETIC, compose_config, run_cli

# 2 epochs of 100 small batches: long enough that a kill after the first checkpoint lands mid-run;
# dropout > 0 so the restored RNG state matters too
KILLABLE = ["trainer.max_epochs=2", "trainer.progress_bar=none", "data.train_size=800", "data.val_size=64",
            "data.test_size=256", "data.batch_size=8", "trainer.limit_val_batches=1", "model.dropout=0.2", "seed=5"]


def _wait_for(pattern: str, root: Path, proc: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
        if proc.poll() is not None:
            pytest.fail(f"training ended (exit code {proc.returncode}) before any checkpoint appeared")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no {pattern} under {root} after {timeout} s")


@pytest.mark.slow
def test_killed_run_resumes_with_the_same_command_and_matches_an_uninterrupted_run(tmp_path):
    root = tmp_path / "runs"
    args = [f"output_root={root}", *KILLABLE]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen([sys.executable, "-m", "lossbench.train", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = _wait_for("*/*/checkpoints/last.ckpt", root, proc)  # written atomically by Lightning
    proc.kill()  # SIGKILL: no handler, no cleanup
    assert proc.wait(timeout=60) == -9
    killed_dir = checkpoint.parent.parent
    assert not (killed_dir / "summary.json").exists(), "the run finished before it was killed"
    assert checkpoint_info(checkpoint) == {"epochs": 1, "global_step": 100}

    again = run_cli(args, cwd=tmp_path)  # the same command; resume=auto is the default
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {checkpoint}" in again.stdout + again.stderr
    [summary_path] = root.glob("*/*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary_path.parent != killed_dir  # the continuation writes its own directory
    assert summary["status"] == "completed" and summary["resumed_from"] == str(checkpoint)
    assert summary["epochs"] == 2 and summary["global_step"] == 200
    with open(summary_path.parent / "metrics.csv") as f:  # it trained only the epochs after the checkpoint
        trained = {int(float(row["epoch"])) for row in csv.DictReader(f)
                   if any(k.startswith("train/") and v for k, v in row.items())}
    assert trained == {1}  # epochs count from 0: only the second was trained after the resume

    reference = train(compose_config(args), tmp_path / "uninterrupted")
    assert reference["global_step"] == 200
    assert summary["metrics"] == reference["metrics"]  # exactly, not approximately
    resumed = torch.load(summary_path.parent / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    uninterrupted = torch.load(tmp_path / "uninterrupted" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert torch.equal(resumed[name], uninterrupted[name]), name


# -- which attempt resume picks -------------------------------------------------------------------------
def _attempt(root: Path, rel: str, overrides: list[str], *, checkpoint: bool, status: str | None, age: float) -> Path:
    """A fake earlier run directory: Hydra's saved config, optionally a checkpoint and a summary."""
    run_dir = root / rel
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose_config(overrides), run_dir / ".hydra" / "config.yaml")
    files = [run_dir / ".hydra" / "config.yaml"]
    if checkpoint:
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"checkpoint")
        files.append(run_dir / "checkpoints" / "last.ckpt")
    if status:
        (run_dir / "summary.json").write_text(json.dumps({"status": status}))
        files.append(run_dir / "summary.json")
    stamp = time.time() - age
    for f in files:
        os.utime(f, (stamp, stamp))
    return run_dir


def _cfg(root: Path, *extra: str):
    return compose_config([f"output_root={root}", *extra])


NAME = "synthetic-sigmoid-bce_with_logits-seed0"


def test_auto_continues_the_newest_unfinished_attempt_of_the_same_config(tmp_path):
    base = [f"output_root={tmp_path}"]
    old = _attempt(tmp_path, f"{NAME}/t1", base, checkpoint=True, status=None, age=300)
    assert find_checkpoint(_cfg(tmp_path)) == old / "checkpoints" / "last.ckpt"
    # a later attempt that died before its first checkpoint left nothing to continue from
    _attempt(tmp_path, f"{NAME}/t2", base, checkpoint=False, status="failed", age=200)
    assert find_checkpoint(_cfg(tmp_path)) == old / "checkpoints" / "last.ckpt"
    # a crashed attempt with a checkpoint is continued
    failed = _attempt(tmp_path, f"{NAME}/t3", base, checkpoint=True, status="failed", age=100)
    assert find_checkpoint(_cfg(tmp_path)) == failed / "checkpoints" / "last.ckpt"
    # display-only keys may differ
    assert find_checkpoint(_cfg(tmp_path, "trainer.progress_bar=tqdm", "print_config=true")) is not None


def test_a_finished_newest_attempt_means_nothing_to_resume(tmp_path):
    base = [f"output_root={tmp_path}"]
    _attempt(tmp_path, f"{NAME}/t1", base, checkpoint=True, status=None, age=300)
    _attempt(tmp_path, f"{NAME}/t2", base, checkpoint=True, status="completed", age=100)
    assert find_checkpoint(_cfg(tmp_path)) is None
    with pytest.raises(ConfigError, match=r"resume=true: no unfinished run .* is completed; use resume=auto"):
        find_checkpoint(_cfg(tmp_path, "resume=true"))


def test_another_config_or_seed_is_never_continued(tmp_path):
    _attempt(tmp_path, f"{NAME}/t1", [f"output_root={tmp_path}"], checkpoint=True, status=None, age=100)
    assert find_checkpoint(_cfg(tmp_path, "optimizer.lr=0.01")) is None
    assert find_checkpoint(_cfg(tmp_path, "seed=1")) is None
    assert find_checkpoint(_cfg(tmp_path, "resume=false")) is None


def test_sweep_jobs_find_their_attempt_in_an_earlier_sweep(tmp_path):
    job = _attempt(tmp_path, f"multirun/t1/1_{NAME}", [f"output_root={tmp_path}"], checkpoint=True, status=None,
                   age=100)
    _attempt(tmp_path, "multirun/t1/0_synthetic-softmax-cross_entropy-seed0",
             [f"output_root={tmp_path}", "loss=cross_entropy"], checkpoint=True, status=None, age=50)
    assert find_checkpoint(_cfg(tmp_path)) == job / "checkpoints" / "last.ckpt"


def test_resume_from_an_explicit_path(tmp_path):
    run_dir = _attempt(tmp_path, "elsewhere/run", [], checkpoint=True, status="completed", age=10)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert find_checkpoint(_cfg(tmp_path, f"resume={run_dir}")) == ckpt
    assert find_checkpoint(_cfg(tmp_path, f"resume={ckpt}")) == ckpt
    with pytest.raises(ConfigError, match=r"resume='.*nowhere': no such checkpoint .*; allowed: auto, true, false"):
        find_checkpoint(_cfg(tmp_path, f"resume={tmp_path / 'nowhere'}"))


def test_a_truncated_checkpoint_is_a_one_line_data_error(tmp_path):
    cfg = compose_config(["trainer.max_epochs=1", "trainer.progress_bar=none", "data.train_size=64",
                          "data.val_size=32", "data.test_size=32", "data.batch_size=32"])
    train(cfg, tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert checkpoint_info(ckpt) == {"epochs": 1, "global_step": 2}
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:500])
    with pytest.raises(DataError, match=r"truncated\.ckpt: not a readable Lightning checkpoint \(.*\); delete it, or "
                                        r"start over with resume=false$"):
        checkpoint_info(truncated)


@pytest.mark.slow
def test_a_corrupt_checkpoint_found_by_auto_is_one_line_with_the_command_that_starts_over(tmp_path):
    root = tmp_path / "runs"
    args = [f"output_root={root}", *TINY_SYNTHETIC, *TINY, "optimizer.lr=0.002"]
    attempt = _attempt(root, f"{NAME}/t1", args, checkpoint=True, status=None, age=10)  # "checkpoint": no zip
    checkpoint = attempt / "checkpoints" / "last.ckpt"
    result = run_cli(args, cwd=tmp_path)  # resume=auto
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    match = re.fullmatch(rf"error: {re.escape(str(checkpoint))}: not a readable Lightning checkpoint \(.+\); "
                         r"delete it, or start over with this command: (python -m lossbench\.train .*)", line)
    assert match, line
    command = shlex.split(match.group(1))
    assert command == ["python", "-m", "lossbench.train", *args, "resume=false"]
    again = run_cli(command[3:], cwd=tmp_path)  # the command it names does start over
    assert again.returncode == 0, again.stderr[-3000:]
    [summary] = [read_summary(p) for p in root.glob(f"{NAME}/*/summary.json")]
    assert summary["status"] == "completed" and "resumed_from" not in summary and summary["epochs"] == 1
    assert checkpoint.read_bytes() == b"checkpoint"  # the damaged file is left as it was


def test_a_summary_write_that_fails_midway_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"status": "completed", "metrics": {"test/acc": 0.9}})

    def half_then_full_disk(tmp):
        tmp.write_text('{"status": "comp')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # the error names the summary, not the temporary file the half was written to
    with pytest.raises(OSError, match=rf"^\[Errno {errno.ENOSPC}\] No space left on device: '{re.escape(str(path))}'$"):
        write_atomic(path, half_then_full_disk)
    with pytest.raises(TypeError, match="^not JSON serialisable: object$"):  # nothing written: refused whole
        write_json_atomic(path, {"status": "completed", "metrics": {"test/acc": object()}})
    assert json.loads(path.read_text()) == {"status": "completed", "metrics": {"test/acc": 0.9}}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left behind


def test_a_metrics_save_that_fails_midway_leaves_the_old_metrics_csv_whole(tmp_path):
    class Unprintable:
        def __str__(self):
            raise ValueError("cannot be written")

    [csv_logger] = build_loggers(compose_config([]), tmp_path)
    csv_logger.log_metrics({"train/loss": 0.5}, step=0)
    csv_logger.save()
    before = (tmp_path / "metrics.csv").read_text()
    csv_logger.log_metrics({"train/loss": 0.25}, step=1)  # would be appended...
    csv_logger.log_metrics({"train/loss": Unprintable()}, step=2)  # ...before this row fails
    with pytest.raises(ValueError, match="cannot be written"):
        csv_logger.save()
    assert (tmp_path / "metrics.csv").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # no temporary file left behind


def test_a_checkpoint_write_that_fails_midway_leaves_the_old_checkpoint_whole(tmp_path):
    io = atomic_checkpoint_io()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "weights": torch.ones(3)}, path)
    # pickling the lambda fails after the tensor was written (AttributeError up to Python 3.13, then PicklingError)
    with pytest.raises((AttributeError, pickle.PicklingError), match=r"Can't pickle .*<lambda>"):
        io.save_checkpoint({"epoch": 2, "weights": torch.zeros(1000), "hook": lambda: None}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
