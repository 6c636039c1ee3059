"""Vectorised members (lossbench.vectorised) against real separate runs of lossbench.train."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch

from lossbench.build import build_datamodule, build_module
from lossbench.engine import train
from lossbench.errors import ConfigError
from lossbench.module import LossModule
from lossbench.summary import read_summary
from lossbench.vectorised import MemberStack, member_configs, train_members

from conftest import TINY, TINY_SYNTHETIC, compose_config, run_cli

SYNTHETIC = ["data=synthetic", *TINY_SYNTHETIC, *TINY]
FLOAT64 = [*SYNTHETIC, "trainer.precision=64-true", "trainer.log_every_n_steps=1"]


def step_losses(run_dir) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(row["train/loss_step"]) for row in csv.DictReader(f) if row.get("train/loss_step")]


def test_members_start_from_the_separate_runs_weights():
    cfg = compose_config([*SYNTHETIC, "seeds=[0,3]", "losses=[bce_with_logits,bce_manual]"])
    cfgs = member_configs(cfg)
    assert [(c.loss.name, c.seed) for c in cfgs] == [("bce_with_logits", 0), ("bce_with_logits", 3),
                                                     ("bce_manual", 0), ("bce_manual", 3)]
    dm = build_datamodule(cfgs[0])
    dm.setup("fit")
    stack = MemberStack(cfgs, dm, torch.device("cpu"), torch.float32)
    for i, member_cfg in enumerate(cfgs):
        L.seed_everything(member_cfg.seed, verbose=False)
        separate = build_module(member_cfg, dm).net.state_dict()
        for name, value in separate.items():
            assert torch.equal(stack.params[name][i], value), (member_cfg.seed, name)
    assert not torch.equal(stack.params["1.weight"][0], stack.params["1.weight"][1])  # seeds differ


@pytest.mark.slow
def test_float64_members_match_separate_runs(tmp_path):
    """Step losses to 1e-6, test metrics, summary schema and config, checkpoint: as separate runs."""
    members = train_members(compose_config([*FLOAT64, "seeds=[0,1]", "losses=[bce_with_logits,bce_manual]"]),
                            tmp_path / "vec")
    assert [s["config"]["run_name"] for s in members] == [
        "synthetic-sigmoid-bce_with_logits-seed0", "synthetic-sigmoid-bce_with_logits-seed1",
        "synthetic-sigmoid-bce_manual-seed0", "synthetic-sigmoid-bce_manual-seed1"]
    for overrides, member in ((["seed=1"], members[1]), (["seed=0", "loss=bce_manual", "head=sigmoid"], members[2])):
        separate = train(compose_config([*FLOAT64, *overrides]), tmp_path / member["config"]["run_name"])
        member_dir = tmp_path / "vec" / member["config"]["run_name"]
        assert read_summary(member_dir) == member
        assert set(member) == set(separate)
        assert member["classes"] == separate["classes"] == [f"class_{c}" for c in range(10)]
        assert member["config"] == separate["config"]
        assert (member["status"], member["task"], member["epochs"], member["global_step"]) == \
               (separate["status"], separate["task"], separate["epochs"], separate["global_step"])
        expected, got = step_losses(tmp_path / member["config"]["run_name"]), step_losses(member_dir)
        assert len(expected) == len(got) == 4
        assert got == pytest.approx(expected, abs=1e-6)
        assert set(member["metrics"]) == set(separate["metrics"])
        for name, value in separate["metrics"].items():
            assert member["metrics"][name] == pytest.approx(value, abs=1e-6), name
        loaded = LossModule.load_from_checkpoint(member_dir / "checkpoints" / "last.ckpt", map_location="cpu")
        reference = torch.load(tmp_path / member["config"]["run_name"] / "checkpoints" / "last.ckpt",
                               map_location="cpu", weights_only=False)["state_dict"]
        for name, value in loaded.state_dict().items():
            torch.testing.assert_close(value.double(), reference[name].double(), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_cnn_members_on_mnist_match_a_separate_run(mnist_root, tmp_path):
    overrides = ["data=mnist", f"data.root={mnist_root}", "loss=cross_entropy", "model=cnn", "model.channels=[4,8]",
                 "model.hidden=16", *TINY, "trainer.limit_train_batches=3", "trainer.precision=64-true",
                 "trainer.log_every_n_steps=1"]
    members = train_members(compose_config([*overrides, "seeds=[2,5]"]), tmp_path / "vec")
    separate = train(compose_config([*overrides, "seed=5"]), tmp_path / "separate")
    member_dir = tmp_path / "vec" / "mnist-softmax-cross_entropy-seed5"
    assert step_losses(member_dir) == pytest.approx(step_losses(tmp_path / "separate"), abs=1e-6)
    assert members[1]["metrics"] == pytest.approx(separate["metrics"], abs=1e-6)
    assert members[0]["metrics"] != members[1]["metrics"]


@pytest.mark.slow
def test_a_diverged_member_is_marked_and_the_others_continue(tmp_path):
    # naive BCE (eps=0) on probabilities hits log(0) once SGD with lr=1000 saturates the sigmoid
    overrides = [*SYNTHETIC, "loss=bce_manual", "loss.eps=0", "optimizer=sgd", "optimizer.lr=1000"]
    members = train_members(compose_config([*overrides, "seeds=[0]", "losses=[bce_manual,bce_with_logits]"]),
                            tmp_path / "vec")
    diverged, stable = members
    separate = train(compose_config(overrides), tmp_path / "separate")
    assert separate["status"] == diverged["status"] == "diverged"
    assert diverged["divergence"] == separate["divergence"]
    assert not math.isfinite(float(diverged["divergence"]["loss"])) and diverged["metrics"] == {}
    assert (diverged["epochs"], diverged["global_step"]) == (separate["epochs"], separate["global_step"])
    assert stable["status"] == "completed" and stable["global_step"] == 4 and stable["metrics"]


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.dropout=0.5"], "model.dropout=0.5 is not supported with seeds=/losses="),
    (["trainer.precision=16-mixed"], "trainer.precision='16-mixed' is not supported with seeds=/losses=; allowed: 32-true, 64-true"),
    (["trainer.devices=2"], "trainer.devices=2 is not supported with seeds=/losses="),
    (["losses=[bce_with_logits,cross_entropy]"], "head=sigmoid is not valid for loss=cross_entropy"),
    (["losses=[bce_with_logits,nope]"], "losses: 'nope' is unknown; available: "),
    (["losses=[bce_manual,bce_manual]"], "losses=['bce_manual', 'bce_manual'] is invalid"),
])
def test_unsupported_settings_are_rejected_in_one_line(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=None) as err:
        train_members(compose_config([*SYNTHETIC, "seeds=[0,1]", *overrides]), tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not list(tmp_path.rglob("summary.json"))


@pytest.mark.slow
def test_cli_trains_members_into_their_own_run_directories(tmp_path):
    result = run_cli([f"output_root={tmp_path}", *SYNTHETIC, "seeds=[0,1,2]"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summaries = sorted(tmp_path.rglob("summary.json"))
    assert [p.parent.name for p in summaries] == [f"synthetic-sigmoid-bce_with_logits-seed{s}" for s in range(3)]
    for path in summaries:
        summary = read_summary(path)
        assert summary["status"] == "completed" and summary["config"]["seeds"] is None
        assert all(v is not None and math.isfinite(v) for v in summary["metrics"].values())
        assert (path.parent / "metrics.csv").exists() and (path.parent / "checkpoints" / "last.ckpt").exists()
    assert result.stdout.count("run directory:") == 3
