"""Divergence: a non-finite training loss (the naive BCE, ``loss=bce_manual loss.eps=0``, with a large
learning rate: log(0) once a sigmoid saturates in float32) stops that run cleanly with
``status: diverged``; in a sweep the other jobs go on, and the report counts it without averaging it."""

from __future__ import annotations

import json
import math

import pytest

from lossbench.analysis.report import build_report
from lossbench.engine import train

from conftest import TINY, TINY_SYNTHETIC, compose_config, run_cli

NAIVE_BCE = ["loss=bce_manual", "loss.eps=0"]


def _strict_json(path):
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_non_finite_loss_stops_the_run_with_status_diverged(tmp_path):
    cfg = compose_config([*TINY_SYNTHETIC, *TINY, *NAIVE_BCE, "optimizer.lr=1", "trainer.max_epochs=3"])
    summary = train(cfg, tmp_path)
    assert summary["status"] == "diverged"
    assert summary["metrics"] == {}  # no test metrics from a diverged model
    step, loss = summary["divergence"]["step"], summary["divergence"]["loss"]
    assert isinstance(step, int) and step >= 0 and not math.isfinite(float(loss))
    assert summary["global_step"] <= step + 1 < 3 * 4  # stopped at once, not after 3 epochs of 4 steps
    assert _strict_json(tmp_path / "summary.json") == summary


def test_the_stable_form_does_not_diverge_at_the_same_settings(tmp_path):
    cfg = compose_config([*TINY_SYNTHETIC, *TINY, "loss=bce_with_logits", "optimizer.lr=1"])
    assert train(cfg, tmp_path)["status"] == "completed"


@pytest.mark.slow
def test_in_a_sweep_the_diverged_job_is_recorded_and_the_other_completes(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", *TINY_SYNTHETIC, *TINY, *NAIVE_BCE, "optimizer.lr=1,0.001", f"output_root={tmp_path}",
                      f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = {s["config"]["optimizer"]["lr"]: s for s in map(_strict_json, sweep.glob("*/summary.json"))}
    assert summaries[1]["status"] == "diverged" and summaries[1]["metrics"] == {}
    assert not math.isfinite(float(summaries[1]["divergence"]["loss"]))
    assert summaries[0.001]["status"] == "completed"
    assert all(math.isfinite(v) for v in summaries[0.001]["metrics"].values())
    assert "-- diverged: non-finite training loss" in result.stdout
    # the report counts the diverged run and averages only completed ones
    [diverged] = [s for s in build_report([sweep]).strategies if s.config["optimizer.lr"] == 1]
    assert diverged.count("diverged") == 1 and diverged.completed == [] and diverged.stats("test/f1_macro") is None
