"""Shared fixtures: compose real Hydra configs and run the real training entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lossbench.paths import CONFIG_DIR as _CONFIG_PATH

CONFIG_DIR = str(_CONFIG_PATH)  # the one the package finds: the checkout's configs/ here

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LOSSBENCH_DATA", REPO.parent / "shared" / "datasets"))

# Tiny settings every end-to-end test starts from: a few steps, no progress bar.
TINY = [
    "trainer.max_epochs=1",
    "trainer.progress_bar=none",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "data.batch_size=64",
]
TINY_SYNTHETIC = ["data.train_size=512", "data.val_size=128", "data.test_size=128"]


def compose_config(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m lossbench.train`` as a user would."""
    full_env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    return subprocess.run([sys.executable, "-m", "lossbench.train", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def trained_classes(run_dir: Path) -> tuple[list[str], int]:
    """(class names in the run's thresholds.json, width of the trained network's last layer)."""
    import json

    import torch

    names = json.loads((Path(run_dir) / "thresholds.json").read_text())["classes"]
    weights = torch.load(Path(run_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    last = [v for k, v in weights["state_dict"].items() if k.endswith(".weight")][-1]
    return names, last.shape[0]


@pytest.fixture
def mnist_root() -> Path:
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST IDX files not found under {SHARED_DATA}/MNIST/raw (set LOSSBENCH_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # decompressed MNIST goes to one cache per test session, never the user's home
    cache = tmp_path_factory.getbasetemp() / "lossbench-cache"
    monkeypatch.setenv("LOSSBENCH_CACHE", str(cache))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
