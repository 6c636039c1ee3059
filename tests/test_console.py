"""What a run prints: no Lightning chatter on a CPU run (a real warning and a real error still show), and
``print_config=true`` shows the resolved config as a tree."""

from __future__ import annotations

import io
import logging
import re
import warnings

import pytest
from rich.console import Console

from lossbench.build import quiet_lightning
from lossbench.console import print_config_tree

from conftest import TINY, TINY_SYNTHETIC, compose_config, run_cli

# what Lightning prints on every CPU run and says nothing about a lossbench run
NOISE = ["GPU available", "TPU available", "HPU available", "litlogger", "💡", "LeafSpec", "logging interval",
         "srun", "`Trainer.fit` stopped"]
WARNING_LOCATION = re.compile(r"\.py:\d+: ")  # how Lightning and Python print a warning: file.py:123: message


def assert_quiet(output: str) -> None:
    assert [n for n in NOISE if n in output] == [], output[-3000:]
    assert not WARNING_LOCATION.search(output), output[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("data", ["synthetic", "mnist"])
def test_a_one_epoch_cpu_run_prints_no_lightning_noise(data, tmp_path, request):
    sizes = TINY_SYNTHETIC if data == "synthetic" else ["data.train_size=256", "data.val_size=64",
                                                        "data.test_size=64"]
    if data == "mnist":
        request.getfixturevalue("mnist_root")
    # 4 training batches: shorter than Lightning's default logging interval of 50 steps
    result = run_cli([f"data={data}", *TINY, *sizes, f"output_root={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""
    assert "completed" in result.stdout and "run directory:" in result.stdout
    assert_quiet(result.stdout)


@pytest.mark.slow
def test_a_real_lightning_warning_and_a_bad_value_still_print(tmp_path):
    # fp16 AMP is not supported on a CPU: Lightning says so and switches to bf16, which the user must learn
    few = [*TINY, *TINY_SYNTHETIC, "model.hidden=[8]", "trainer.limit_train_batches=1", "trainer.limit_val_batches=0",
           "trainer.limit_test_batches=1", f"output_root={tmp_path}"]
    result = run_cli([*few, "trainer.precision=16-mixed"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "AMP with fp16 is not supported on CPU. Using `precision='bf16-mixed'` instead" in result.stderr
    assert_quiet(result.stdout)
    # an error raised while the Trainer is built (after the filters are in place) is one line
    result = run_cli([*few, "trainer.precision=bogus"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: trainer: Precision 'bogus' is invalid. Allowed precision values:")


def test_the_filters_drop_only_the_known_lines(caplog):
    from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

    quiet_lightning()
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        rank_zero_info("GPU available: False, used: False")
        rank_zero_info("Using bfloat16 Automatic Mixed Precision (AMP)")
    assert [r.getMessage() for r in caplog.records] == ["Using bfloat16 Automatic Mixed Precision (AMP)"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning()  # catch_warnings reset the filters
        rank_zero_warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`")
        rank_zero_warn("The dataloader does not have many workers")
    assert [str(w.message) for w in caught] == ["The dataloader does not have many workers"]


def test_print_config_shows_the_resolved_config_as_a_tree(monkeypatch):
    monkeypatch.setenv("LOSSBENCH_TEST_TOKEN", "tok-" + "s3cr3t" * 3)
    cfg = compose_config(["loss=focal", "optimizer.lr=0.25", "+logger.api_key=${oc.env:LOSSBENCH_TEST_TOKEN}"])
    out = io.StringIO()
    print_config_tree(cfg, Console(file=out, width=120, color_system=None))
    lines = out.getvalue().splitlines()
    assert lines[0] == "config"
    branches = [line[4:] for line in lines if line.startswith(("├── ", "└── "))]
    assert branches[:10] == ["data", "noise", "model", "head", "loss", "optimizer", "scheduler", "trainer", "logger",
                             "decision"]
    assert "seed: 0" in branches and "run_name: synthetic-sigmoid-focal-seed0" in branches  # resolved
    loss = lines.index("├── loss")
    assert lines[loss + 1] == "│   └── name: focal" and "│       gamma: 2.0" in lines[loss + 2:loss + 6]
    assert "│       lr: 0.25" in lines
    assert "│       api_key: <redacted>" in lines and "s3cr3t" not in out.getvalue()
