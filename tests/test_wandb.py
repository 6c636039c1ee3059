"""W&B: real offline runs of a real 2-job sweep, read back from the ``.wandb`` files with wandb's own
protobuf classes (wandb 0.31 ships no Python reader; format: ../shared/notes/wandb-offline.md)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from lossbench.errors import ConfigError
from lossbench.loggers import resolve_wandb_mode, wandb_api_key_configured

from conftest import TINY, TINY_SYNTHETIC, run_cli

FAKE_KEY = "lbfake" + "0123456789abcdef" * 2 + "xx"  # 40 characters, never valid anywhere
BLOCK = 32 * 1024  # LevelDB log block size
HEADER = 7  # ":W&B", 2-byte magic, 1-byte version -- and, separately, each chunk's crc32/length/type


def read_wandb_records(path: Path) -> list:
    """Every record of a ``run-<id>.wandb`` file, as ``wandb_internal_pb2.Record`` messages.

    LevelDB log framing: 32 KiB blocks; each chunk is crc32 (4 bytes LE, masked), length (2), type
    (1 full, 2 first, 3 middle, 4 last) and the payload; a block tail under 7 bytes is padding.
    """
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        payload = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 2):
            pending = payload
        elif kind in (3, 4):
            pending += payload
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def read_wandb_run(path: Path) -> dict:
    """The run's name, group, job type, tags, config, final summary, history rows and exit code."""
    def items(updates) -> dict:
        return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in updates}

    run: dict = {"config": {}, "summary": {}, "history": [], "exit_code": None}
    for record in read_wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.update(id=r.run_id, name=r.display_name, group=r.run_group, job_type=r.job_type,
                       tags=list(r.tags), project=r.project)
            run["config"].update(items(r.config.update))
        elif kind == "config":
            run["config"].update(items(record.config.update))
        elif kind == "summary":
            run["summary"].update(items(record.summary.update))
        elif kind == "history":
            run["history"].append(items(record.history.item))
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


def test_reader_reassembles_records_split_across_blocks(tmp_path):
    # a record longer than a block is written as first/middle/last chunks; build one and read it back
    from wandb.proto import wandb_internal_pb2

    record = wandb_internal_pb2.Record()
    record.run.run_id, record.run.display_name = "abc", "x" * (BLOCK + 5000)
    payload = record.SerializeToString()
    out, pos, first = bytearray(b":W&B" + b"\x00\x00\x00"), HEADER, True
    while payload:
        room = BLOCK - pos % BLOCK - HEADER
        chunk, payload = payload[:room], payload[room:]
        kind = (1 if not payload else 2) if first else (4 if not payload else 3)
        out += struct.pack("<IHB", zlib.crc32(chunk), len(chunk), kind) + chunk
        pos += HEADER + len(chunk)
        first = False
    (tmp_path / "run.wandb").write_bytes(bytes(out))
    [back] = read_wandb_records(tmp_path / "run.wandb")
    assert back.run.run_id == "abc" and back.run.display_name == record.run.display_name


def test_mode_is_offline_without_an_api_key_and_online_with_one(monkeypatch, tmp_path):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    assert not wandb_api_key_configured() and resolve_wandb_mode("auto") == "offline"

    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    netrc.chmod(0o600)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a key for another host does not count
    assert resolve_wandb_mode("auto") == "offline"

    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")  # the user's explicit choice wins over the key
    assert resolve_wandb_mode("auto") == "offline"
    assert resolve_wandb_mode("disabled") == "disabled"


def test_bad_modes_are_rejected_in_one_line(monkeypatch):
    with pytest.raises(ConfigError, match=r"^logger.mode='sometimes' is invalid; allowed: auto, online, offline, disabled$"):
        resolve_wandb_mode("sometimes")
    monkeypatch.setenv("WANDB_MODE", "cloud")
    with pytest.raises(ConfigError, match=r"^WANDB_MODE='cloud' is invalid; allowed: online, run, offline"):
        resolve_wandb_mode("auto")


@pytest.mark.slow
def test_sweep_logs_one_finished_offline_run_per_job(tmp_path):
    env = {"WANDB_MODE": "offline", "WANDB_API_KEY": FAKE_KEY, "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
           "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_DATA_DIR": str(tmp_path / "wandb-data")}
    result = run_cli(["-m", f"output_root={tmp_path}", "logger=wandb", "logger.tags=[smoke]",
                      "loss=bce_with_logits,cross_entropy", *TINY_SYNTHETIC, *TINY, "trainer.max_epochs=2"],
                     cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    [sweep] = list((tmp_path / "multirun").iterdir())
    jobs = sorted(p.parent for p in sweep.rglob("summary.json"))
    assert [j.name for j in jobs] == ["0_synthetic-sigmoid-bce_with_logits-seed0",
                                      "1_synthetic-softmax-cross_entropy-seed0"]
    run_ids = set()
    for job, (head, loss) in zip(jobs, [("sigmoid", "bce_with_logits"), ("softmax", "cross_entropy")], strict=True):
        summary = json.loads((job / "summary.json").read_text())
        assert (job / "metrics.csv").exists()  # CSV logs are written too
        [run_file] = list(job.glob("wandb/offline-run-*/run-*.wandb"))  # one run per job, inside the job
        run = read_wandb_run(run_file)
        run_ids.add(run["id"])
        assert run["name"] == f"synthetic-{head}-{loss}-seed0"
        assert run["group"] == f"sweep-{sweep.name}"
        assert run["job_type"] == f"{head}+{loss}"
        assert run["project"] == "lossbench"
        assert set(run["tags"]) == {"synthetic", head, loss, "smoke"}
        for key in ("data", "head", "loss", "model", "optimizer", "trainer", "seed"):  # the full resolved config
            assert run["config"][key] == summary["config"][key], key
        assert run["config"]["task"] == "multilabel"  # added from the module's hyper-parameters
        assert run["summary"]["status"] == "completed"
        for name, value in summary["metrics"].items():
            assert run["summary"][name] == pytest.approx(value), name
        val_rows = [row for row in run["history"] if "val/loss" in row]
        assert [row["epoch"] for row in val_rows] == [0, 1]
        assert run["exit_code"] == 0  # finished by its own job, not by the next one or at exit
        assert f"wandb sync {run_file.parent}" in result.stdout
        for path in job.rglob("*"):  # the API key is never written anywhere
            assert not path.is_file() or FAKE_KEY.encode() not in path.read_bytes(), path
    assert len(run_ids) == 2


CRASHING_RUN = """
import sys, wandb
from lossbench.module import LossModule
from lossbench.engine import train
from conftest import compose_config

def fail(self, batch, batch_idx):  # a fault injected into a real run, after its W&B run has started
    raise RuntimeError("injected failure")

LossModule.training_step = fail
try:
    train(compose_config(sys.argv[2:]), __import__("pathlib").Path(sys.argv[1]))
except RuntimeError as err:
    assert "injected failure" in str(err), err
    assert wandb.run is None, "a W&B run was left open for the next job"
    print("CRASHED AS EXPECTED")
"""


@pytest.mark.slow
def test_a_crashing_run_is_finished_as_failed_and_leaks_into_nothing(tmp_path):
    # in its own process: wandb keeps process-wide state that other tests in a worker must not share
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(Path(__file__).parent)}
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        env[name] = str(tmp_path / name.lower())
    result = subprocess.run([sys.executable, "-c", CRASHING_RUN, str(tmp_path), "logger=wandb", "logger.group=crash",
                             *TINY_SYNTHETIC, *TINY], env=env, capture_output=True, text=True, timeout=300)
    assert "CRASHED AS EXPECTED" in result.stdout, result.stderr[-3000:]
    [run_file] = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    run = read_wandb_run(run_file)
    assert (run["group"], run["exit_code"], run["summary"]["status"]) == ("crash", 1, "failed")
