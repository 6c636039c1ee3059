"""Registries: every part is registered in the module that defines it, under the name of its config file, and a
new loss is one module plus one YAML file (trained once in a temporary copy of the package, where the check
for a float64 reference case catches that it has none)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lossbench.data import DATASETS
from lossbench.losses import LOSSES
from lossbench.models import MODELS, OPTIMIZERS

from conftest import CONFIG_DIR, REPO, TINY, TINY_SYNTHETIC

REGISTRIES = {"data": DATASETS, "loss": LOSSES, "model": MODELS, "optimizer": OPTIMIZERS}


@pytest.mark.parametrize("group", REGISTRIES)
def test_each_config_file_names_a_registered_part(group):
    files = sorted(Path(CONFIG_DIR, group).glob("*.yaml"))
    assert [p.stem for p in files] == REGISTRIES[group].names()
    for path in files:
        assert OmegaConf.load(path).name == path.stem, path


def test_each_part_is_registered_where_it_is_defined():
    for name, cls in LOSSES.items():
        assert cls.__module__ == f"lossbench.losses.{name}", name  # one module per loss, named after it
    for name, cls in DATASETS.items():
        assert cls.__module__.startswith("lossbench.data."), name
    for name, build in MODELS.items():
        assert build.__module__ == "lossbench.models", name


THROWAWAY = '''"""A throwaway loss: BCE on logits, for the test that a new loss is one module.
Head: sigmoid. Tasks: multi-label, and single-label on one-hot targets.
"""

import torch.nn.functional as F

from lossbench.losses.base import Loss, register_loss


@register_loss
class Throwaway(Loss):
    name = "throwaway"
    heads = ("sigmoid",)

    def forward(self, logits, target):
        return self.reduce(F.binary_cross_entropy_with_logits(logits, target, reduction="none"))
'''


@pytest.fixture(scope="module")
def copy_with_a_new_loss(tmp_path_factory) -> Path:
    """src/ and configs/ copied, with one new loss module and its YAML file and nothing else edited."""
    root = tmp_path_factory.mktemp("new-loss")
    for part in ("src", "configs"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (root / "src" / "lossbench" / "losses" / "throwaway.py").write_text(THROWAWAY)
    (root / "configs" / "loss" / "throwaway.yaml").write_text(
        "defaults:\n  - /head@_global_.head: sigmoid\nname: throwaway\nreduction: mean\n")
    return root


def _run(root: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_new_loss_is_one_module_and_one_yaml_file(copy_with_a_new_loss, tmp_path):
    result = _run(copy_with_a_new_loss, ["-m", "lossbench.train", "loss=throwaway", *TINY, *TINY_SYNTHETIC,
                                         f"output_root={tmp_path}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [summary] = tmp_path.rglob("summary.json")
    summary = json.loads(summary.read_text())
    assert summary["status"] == "completed" and summary["config"]["loss"]["name"] == "throwaway"


@pytest.mark.slow
def test_a_loss_registered_without_a_reference_case_fails_the_check(copy_with_a_new_loss, tmp_path):
    check = f"{REPO / 'tests' / 'test_losses.py'}::test_every_registered_loss_has_a_float64_reference_case"
    result = _run(copy_with_a_new_loss, ["-m", "pytest", "-q", "-p", "no:cacheprovider", check], tmp_path)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "1 failed" in result.stdout and "'throwaway'" in result.stdout
