"""Members (lossbench.members): M runs trained as one LightningModule by the Lightning Trainer, against real
separate runs of lossbench.engine.train."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time

import lightning as L
import pytest
import torch

from lossbench.build import build_datamodule, build_module
from lossbench.engine import train
from lossbench.errors import ConfigError
from lossbench.members import MemberModule, member_configs, train_members
from lossbench.module import LossModule
from lossbench.predict import load_run
from lossbench.summary import read_summary

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
    stack = MemberModule(cfgs, dm)
    weights = stack.weights()
    for i, member_cfg in enumerate(cfgs):
        L.seed_everything(member_cfg.seed, verbose=False)
        separate = build_module(member_cfg, dm).net.state_dict()
        for name, value in separate.items():
            assert torch.equal(weights[name][i], value), (member_cfg.seed, name)
    assert not torch.equal(weights["1.weight"][0], weights["1.weight"][1])  # seeds differ
    # one optimizer over the stacked tensors only: no member's own copy of the weights is left to train
    assert {id(p) for p in stack.parameters()} == {id(p) for p in stack.stacked}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_float64_members_match_separate_runs(tmp_path, mode):
    """Step losses to 1e-6, test metrics, summary schema and config, checkpoint: as separate runs."""
    members = train_members(compose_config([*FLOAT64, "seeds=[0,1]", "losses=[bce_with_logits,bce_manual]",
                                            f"members_forward={mode}"]), tmp_path / "vec")
    assert [s["config"]["run_name"] for s in members] == [
        "synthetic-sigmoid-bce_with_logits-seed0", "synthetic-sigmoid-bce_with_logits-seed1",
        "synthetic-sigmoid-bce_manual-seed0", "synthetic-sigmoid-bce_manual-seed1"]
    for overrides, member in ((["seed=1"], members[1]), (["seed=0", "loss=bce_manual", "head=sigmoid"], members[2])):
        separate_dir = tmp_path / member["config"]["run_name"]
        separate = train(compose_config([*FLOAT64, *overrides]), separate_dir)
        member_dir = tmp_path / "vec" / member["config"]["run_name"]
        assert read_summary(member_dir) == member
        assert set(member) == set(separate)
        assert {**member["config"], "members_forward": "auto"} == separate["config"]
        assert (member["num_classes"], member["classes"]) == (separate["num_classes"], separate["classes"])
        assert (member["status"], member["task"], member["epochs"], member["global_step"]) == \
               (separate["status"], separate["task"], separate["epochs"], separate["global_step"])
        expected, got = step_losses(separate_dir), step_losses(member_dir)
        assert len(expected) == len(got) == 4
        assert got == pytest.approx(expected, abs=1e-6)
        assert set(member["metrics"]) == set(separate["metrics"])
        for name, value in separate["metrics"].items():
            assert member["metrics"][name] == pytest.approx(value, abs=1e-6), name
        # the files a separate run leaves, with the same columns and checkpoint contents
        # (.hydra/ is Hydra's, written by the CLI: train() called directly has none)
        assert sorted(p.name for p in member_dir.iterdir()) == sorted([".hydra", *(p.name for p in separate_dir.iterdir())])
        with open(member_dir / "metrics.csv") as a, open(separate_dir / "metrics.csv") as b:
            assert set(next(csv.reader(a))) == set(next(csv.reader(b)))
        ours = torch.load(member_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        theirs = torch.load(separate_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert set(ours) == set(theirs)
        assert ours["hyper_parameters"] == theirs["hyper_parameters"]
        assert ours["state_dict"].keys() == theirs["state_dict"].keys()
        for name, value in theirs["state_dict"].items():
            torch.testing.assert_close(ours["state_dict"][name], value, atol=1e-6, rtol=0)
        for key, state in theirs["optimizer_states"][0]["state"].items():
            for name, value in state.items():
                torch.testing.assert_close(ours["optimizer_states"][0]["state"][key][name], value, atol=1e-6, rtol=0)
        loaded = LossModule.load_from_checkpoint(member_dir / "checkpoints" / "last.ckpt", map_location="cpu")
        for name, value in loaded.state_dict().items():
            torch.testing.assert_close(value.double(), theirs["state_dict"][name].double(), atol=1e-6, rtol=0)
        shape, classes = loaded.hparams.input_shape, loaded.hparams.num_classes
        assert load_run(member_dir).predict(torch.randn(3, *shape)).probabilities.shape == (3, classes)


@pytest.mark.slow
def test_cnn_members_on_mnist_match_a_separate_run(mnist_root, tmp_path):
    overrides = ["data=mnist", f"data.root={mnist_root}", "loss=cross_entropy", "model=cnn", "model.channels=[4,8]",
                 "model.hidden=16", *TINY, "trainer.limit_train_batches=3", "trainer.precision=64-true",
                 "trainer.log_every_n_steps=1"]
    members = train_members(compose_config([*overrides, "seeds=[2,5]", "members_forward=vmap"]), tmp_path / "vec")
    separate = train(compose_config([*overrides, "seed=5"]), tmp_path / "separate")
    member_dir = tmp_path / "vec" / "mnist-softmax-cross_entropy-seed5"
    assert step_losses(member_dir) == pytest.approx(step_losses(tmp_path / "separate"), abs=1e-6)
    assert members[1]["metrics"] == pytest.approx(separate["metrics"], abs=1e-6)
    assert members[0]["metrics"] != members[1]["metrics"]


@pytest.mark.slow
def test_gradient_clipping_and_a_schedule_act_on_each_member_as_on_a_separate_run(tmp_path):
    overrides = [*FLOAT64, "trainer.gradient_clip_val=0.05", "scheduler=onecycle", "optimizer.lr=0.05"]
    members = train_members(compose_config([*overrides, "seeds=[0,4]"]), tmp_path / "vec")
    separate = train(compose_config([*overrides, "seed=4"]), tmp_path / "separate")
    unclipped = train(compose_config([*FLOAT64, "scheduler=onecycle", "optimizer.lr=0.05", "seed=4"]), tmp_path / "u")
    assert step_losses(tmp_path / "vec" / "synthetic-sigmoid-bce_with_logits-seed4") == \
        pytest.approx(step_losses(tmp_path / "separate"), abs=1e-6)
    assert members[1]["metrics"] == pytest.approx(separate["metrics"], abs=1e-6)
    assert step_losses(tmp_path / "u") != pytest.approx(step_losses(tmp_path / "separate"), abs=1e-6)
    assert unclipped["metrics"] != pytest.approx(separate["metrics"], abs=1e-6)


@pytest.mark.slow
def test_a_diverged_member_is_marked_stops_changing_and_the_others_continue(tmp_path):
    # naive BCE (eps=0) on probabilities hits log(0) once SGD with lr=1000 saturates the sigmoid
    overrides = [*SYNTHETIC, "loss=bce_manual", "loss.eps=0", "optimizer=sgd", "optimizer.lr=1000",
                 "trainer.log_every_n_steps=1"]
    members = train_members(compose_config([*overrides, "seeds=[0]", "losses=[bce_manual,bce_with_logits]"]),
                            tmp_path / "vec")
    diverged, stable = members
    separate = train(compose_config(overrides), tmp_path / "separate")
    assert separate["status"] == diverged["status"] == "diverged"
    assert diverged["divergence"] == separate["divergence"]
    assert not math.isfinite(float(diverged["divergence"]["loss"])) and diverged["metrics"] == {}
    assert (diverged["epochs"], diverged["global_step"]) == (separate["epochs"], separate["global_step"])
    assert stable["status"] == "completed" and stable["global_step"] == 4 and stable["metrics"]
    assert diverged["global_step"] < 4  # so the stack went on stepping after the divergence was seen
    # the diverged member's weights are the ones it had when its divergence was seen, not the steps after
    steps = step_losses(tmp_path / "vec" / diverged["config"]["run_name"])
    assert len(steps) == diverged["global_step"] and not math.isfinite(steps[-1])  # up to the bad step, no more
    assert steps == pytest.approx(step_losses(tmp_path / "separate"), nan_ok=True)
    frozen = torch.load(tmp_path / "vec" / diverged["config"]["run_name"] / "checkpoints" / "last.ckpt",
                        weights_only=True)["state_dict"]
    at_divergence = torch.load(tmp_path / "separate" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for name, value in at_divergence.items():
        assert torch.equal(frozen[name].isnan(), value.isnan()), name
        assert torch.allclose(frozen[name].nan_to_num(), value.nan_to_num(), atol=1e-5), name


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.dropout=0.5"], "model.dropout=0.5 is not supported with seeds=/losses="),
    (["trainer.precision=16-true"], "trainer.precision='16-true' is not supported with seeds=/losses=; allowed: "
                                    "32-true, 64-true, bf16-mixed, 16-mixed"),
    (["trainer.devices=2"], "trainer.devices=2 is not supported with seeds=/losses="),
    (["losses=[bce_with_logits,cross_entropy]"], "head=sigmoid is not valid for loss=cross_entropy"),
    (["losses=[bce_with_logits,nope]"], "losses: 'nope' is unknown; available: "),
    (["losses=[bce_manual,bce_manual]"], "losses=['bce_manual', 'bce_manual'] is invalid"),
])
def test_unsupported_settings_are_rejected_in_one_line(overrides, message, tmp_path):
    with pytest.raises(ConfigError) as err:
        train_members(compose_config([*SYNTHETIC, "seeds=[0,1]", *overrides]), tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not list(tmp_path.rglob("summary.json"))


class BatchNormNet(torch.nn.Sequential):
    """A user's model (``model=custom model._target_=test_members.BatchNormNet``) with batch norm."""

    def __init__(self, in_shape, num_outputs):
        super().__init__(torch.nn.Flatten(), torch.nn.Linear(math.prod(in_shape), 8), torch.nn.BatchNorm1d(8),
                         torch.nn.Linear(8, num_outputs))


class ScaledNet(torch.nn.Module):
    """A user's model with a constant buffer: members stack it with the weights."""

    def __init__(self, in_shape, num_outputs):
        super().__init__()
        self.linear = torch.nn.Linear(math.prod(in_shape), num_outputs)
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, x):
        return self.linear(x.flatten(1)) * self.scale


def test_a_model_with_batch_norm_is_refused_in_one_line(tmp_path):
    overrides = [*SYNTHETIC, "seeds=[0,1]", "model=custom", "model._target_=test_members.BatchNormNet"]
    with pytest.raises(ConfigError) as err:
        train_members(compose_config(overrides), tmp_path)
    assert "model=custom has 2 (BatchNorm1d: running statistics), which members cannot train" in str(err.value)
    assert "\n" not in str(err.value) and not list(tmp_path.rglob("summary.json"))


@pytest.mark.slow
def test_members_of_a_model_with_a_buffer_match_separate_runs(tmp_path):
    overrides = [*FLOAT64, "model=custom", "model._target_=test_members.ScaledNet"]
    members = train_members(compose_config([*overrides, "seeds=[0,2]"]), tmp_path / "vec")
    separate = train(compose_config([*overrides, "seed=2"]), tmp_path / "separate")
    assert step_losses(tmp_path / "vec" / members[1]["config"]["run_name"]) == \
        pytest.approx(step_losses(tmp_path / "separate"), abs=1e-6)
    assert members[1]["metrics"] == pytest.approx(separate["metrics"], abs=1e-6)


def test_bf16_mixed_members_train(tmp_path):
    """bf16 autocast around the vmapped stack (on a CPU here; the same plugin runs on a GPU)."""
    [a, b] = train_members(compose_config([*SYNTHETIC, "seeds=[0,1]", "trainer.precision=bf16-mixed",
                                           "trainer.accelerator=cpu"]), tmp_path)
    for summary in (a, b):
        assert summary["status"] == "completed"
        assert all(v is not None and math.isfinite(v) for v in summary["metrics"].values())
    assert a["metrics"] != b["metrics"]


@pytest.mark.slow
def test_cli_trains_members_into_their_own_run_directories(tmp_path):
    result = run_cli([f"output_root={tmp_path}", *SYNTHETIC, "seeds=[0,1,2]"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summaries = sorted(tmp_path.rglob("*/summary.json"))
    assert [p.parent.name for p in summaries] == [f"synthetic-sigmoid-bce_with_logits-seed{s}" for s in range(3)]
    for path in summaries:
        summary = read_summary(path)
        assert summary["status"] == "completed" and summary["config"]["seeds"] is None
        assert all(v is not None and math.isfinite(v) for v in summary["metrics"].values())
        assert (path.parent / "metrics.csv").exists() and (path.parent / "checkpoints" / "last.ckpt").exists()
    assert result.stdout.count("run directory:") == 3


# 4 members, 2 epochs of 100 small batches: a kill after the stack's first checkpoint lands mid-run
KILLABLE = ["trainer.max_epochs=2", "trainer.progress_bar=none", "data.train_size=800", "data.val_size=64",
            "data.test_size=256", "data.batch_size=8", "trainer.limit_val_batches=1", "seeds=[0,1,2,3]"]


@pytest.mark.slow
def test_killed_members_resume_with_the_same_command_and_match_an_uninterrupted_run(tmp_path):
    root = tmp_path / "runs"
    args = [f"output_root={root}", *KILLABLE]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen([sys.executable, "-m", "lossbench.train", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(root.glob("*/*/checkpoints/last.ckpt")):
        assert proc.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 240 s"
        time.sleep(0.02)
    proc.kill()  # SIGKILL: no handler, no cleanup
    assert proc.wait(timeout=60) == -9
    [checkpoint] = root.glob("*/*/checkpoints/last.ckpt")
    assert not list(root.rglob("summary.json")), "the members finished before the kill"

    again = run_cli(args, cwd=tmp_path)  # the same command; resume=auto is the default
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {checkpoint}" in again.stdout + again.stderr
    resumed = {p.parent.name: p.parent for p in root.rglob("*/summary.json")}
    assert len(resumed) == 4

    reference = train_members(compose_config(args), tmp_path / "uninterrupted")
    for summary in reference:
        name = summary["config"]["run_name"]
        ours = read_summary(resumed[name])
        assert ours["status"] == "completed" and (ours["epochs"], ours["global_step"]) == (2, 200)
        assert ours["metrics"] == summary["metrics"]  # exactly, not approximately
        a = torch.load(resumed[name] / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        b = torch.load(tmp_path / "uninterrupted" / name / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
        # the curves recorded before the kill came back from the checkpoint: both epochs are in metrics.csv
        with open(resumed[name] / "metrics.csv") as f:
            epochs = {int(float(r["epoch"])) for r in csv.DictReader(f) if r.get("train/loss_epoch")}
        assert epochs == {0, 1}
    assert json.loads((tmp_path / "uninterrupted" / reference[0]["config"]["run_name"] / "summary.json").read_text())
