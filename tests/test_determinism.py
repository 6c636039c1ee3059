"""Same config and seed -> identical metrics and identical trained weights on CPU; the summary names
the versions of lossbench, torch, lightning, torchmetrics and the git commit, so a result can be traced."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess

import lightning
import torch
import torchmetrics

import lossbench
from lossbench.engine import train

from conftest import REPO, TINY, TINY_SYNTHETIC, compose_config

# dropout draws random numbers every step: the runs must draw the same ones
OVERRIDES = [*TINY_SYNTHETIC, *TINY, "model.dropout=0.3", "seed=7"]


def _weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def test_same_seed_gives_identical_metrics_and_weights(tmp_path):
    first = train(compose_config(OVERRIDES), tmp_path / "a")
    second = train(compose_config(OVERRIDES), tmp_path / "b")
    assert first["metrics"] and first["metrics"] == second["metrics"]
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    train(compose_config([*OVERRIDES, "seed=8"]), tmp_path / "c")
    other = _weights(tmp_path / "c")
    assert not all(torch.equal(a[k], other[k]) for k in a)  # the seed matters


def test_summary_records_versions_and_git_commit(tmp_path):
    summary = train(compose_config([*TINY_SYNTHETIC, *TINY]), tmp_path)
    versions = summary["versions"]
    # the installed distribution's version (pyproject.toml), which lossbench.__version__ must repeat
    assert versions["lossbench"] == importlib.metadata.version("lossbench") == lossbench.__version__
    assert versions["torch"] == torch.__version__
    assert versions["lightning"] == lightning.__version__
    assert versions["torchmetrics"] == torchmetrics.__version__
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", summary["git_commit"])
    assert summary["git_commit"].removesuffix("-dirty") == head
