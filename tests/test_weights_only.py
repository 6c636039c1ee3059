"""A checkpoint is data, never code: one holding a pickled call (``os.system``) is refused by weights-only
loading wherever lossbench reads checkpoints -- ``resume`` through the CLI, ``engine.train(resume_from=)``
(Lightning's loader) and ``lossbench.predict`` -- with one line, and the call never runs."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lossbench.engine import train
from lossbench.errors import DataError
from lossbench.paths import CHECKPOINT, HYDRA_CONFIG, SUMMARY_FILE
from lossbench.predict import load_run

from conftest import TINY, TINY_SYNTHETIC, compose_config, run_cli

RUN_NAME = "synthetic-sigmoid-bce_with_logits-seed0"
REFUSED = r"weights-only loading refused it: Trying to load unsupported GLOBAL posix\.system whose module posix is blocked"


class Payload:
    """Unpickling this runs ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture
def poisoned_run(tmp_path) -> tuple[Path, list[str], Path]:
    """A real interrupted run folder whose checkpoint carries a payload that would create ``marker``."""
    root = tmp_path / "runs"
    overrides = [f"output_root={root}", *TINY_SYNTHETIC, *TINY]
    run_dir = root / RUN_NAME / "poisoned"
    cfg = compose_config(overrides)
    train(cfg, run_dir)
    (run_dir / SUMMARY_FILE).unlink()  # unfinished: resume=auto picks it
    (run_dir / HYDRA_CONFIG).parent.mkdir()
    OmegaConf.save(cfg, run_dir / HYDRA_CONFIG)
    marker = tmp_path / "payload-ran"
    checkpoint = torch.load(run_dir / CHECKPOINT, weights_only=True)
    checkpoint["callbacks"]["payload"] = Payload(f"touch {marker}")
    torch.save(checkpoint, run_dir / CHECKPOINT)
    # the file really is code-carrying: loading it without weights_only runs the payload
    probe = tmp_path / "probe-ran"
    torch.save({"x": Payload(f"touch {probe}")}, tmp_path / "probe.ckpt")
    torch.load(tmp_path / "probe.ckpt", weights_only=False)
    assert probe.exists()
    return run_dir, overrides, marker


@pytest.mark.slow
def test_resume_through_the_cli_refuses_it_in_one_line(poisoned_run, tmp_path):
    run_dir, overrides, marker = poisoned_run
    result = run_cli(overrides, cwd=tmp_path)  # resume=auto finds the poisoned checkpoint
    assert result.returncode == 2
    assert re.fullmatch(rf"error: {re.escape(str(run_dir / CHECKPOINT))}: not a readable Lightning checkpoint "
                        rf"\({REFUSED}\); delete it, or start over with this command: .*resume=false\n", result.stderr)
    assert not marker.exists()


def test_lightnings_loader_in_train_refuses_it(poisoned_run, tmp_path):
    run_dir, overrides, marker = poisoned_run
    with pytest.raises(pickle.UnpicklingError, match=r"Weights only load failed") as refused:
        train(compose_config(overrides), tmp_path / "continued", resume_from=run_dir / CHECKPOINT)
    assert "posix.system" in str(refused.value)
    assert not marker.exists()


def test_predict_refuses_it_in_one_line(poisoned_run):
    run_dir, _, marker = poisoned_run
    with pytest.raises(DataError, match=rf"^{re.escape(str(run_dir / CHECKPOINT))}: cannot load \({REFUSED}\)$"):
        load_run(run_dir)
    assert not marker.exists()
