"""Your own data and models through the CLI, as a user runs them: each layout trained for one epoch
(class names, task, counts in summary.json, thresholds.json and the data line), predictions by class
name, a custom ``_target_`` model, and bad input ending in one line ``error: ...``."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from lossbench.predict import main as predict_main
from test_data_own import constant_image, folder_tree, tagged_images, write_csv

from conftest import TINY, run_cli

OFFLINE = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def trained(result, tmp_path, run_name: str) -> tuple[dict, object]:
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    summaries = list(tmp_path.glob(f"runs/{run_name}/*/summary.json"))
    assert len(summaries) == 1, list(tmp_path.rglob("summary.json"))
    return json.loads(summaries[0].read_text()), summaries[0].parent


def cli(tmp_path, *args: str, env: dict | None = None):
    return run_cli([f"output_root={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'cache'}", *TINY, *args],
                   cwd=tmp_path, env={**OFFLINE, **(env or {})})


@pytest.mark.slow
def test_cli_image_csv_with_timm_resnet18_the_issues_command(tmp_path, capsys):
    tags = {f"{i:02d}.jpg": ["cat dog", "dog", "", "cat", "bird cat", "dog", "bird", "dog bird"][i % 8]
            for i in range(40)}
    tagged_images(tmp_path, tags, kind="jpeg")
    result = cli(tmp_path, "data=image_csv", "data.csv=tags.csv", "data.image_root=imgs", "loss=asymmetric",
                 "model=timm", "model.arch=resnet18", "data.image_size=32", "data.val_size=0.2", "data.test_size=0.2")
    summary, run_dir = trained(result, tmp_path, "image_csv-sigmoid-asymmetric-seed0")
    assert summary["task"] == "multilabel" and summary["status"] == "completed"
    assert summary["num_classes"] == 3 and summary["classes"] == ["bird", "cat", "dog"]
    assert summary["config"]["model"] == {"name": "timm", "arch": "resnet18", "pretrained": False}
    assert "data: 24 train, 8 val, 8 test; 3 classes (multilabel), torch.uint8 inputs 3x32x32" in result.stdout
    thresholds = json.loads((run_dir / "thresholds.json").read_text())
    assert list(thresholds["val_positives"]) == ["bird", "cat", "dog"]
    assert all(count >= 1 for count in thresholds["val_positives"].values())  # stratified validation
    code = predict_main([str(run_dir), str(tmp_path / "imgs" / "00.jpg"), str(tmp_path / "imgs" / "01.jpg"),
                         "--rule", "all"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["classes"] == ["bird", "cat", "dog"]
    for row in out["predictions"]:
        assert list(row["probabilities"]) == ["bird", "cat", "dog"]
        for decided in row["decisions"].values():
            assert set(decided) <= {"bird", "cat", "dog"}


@pytest.mark.slow
def test_cli_image_folder_single_label_and_predictions_by_class_name(tmp_path, capsys):
    folder_tree(tmp_path / "pets" / "train", {"cat": 12, "dog": 12})
    folder_tree(tmp_path / "pets" / "test", {"cat": 3, "dog": 2}, start=150)
    result = cli(tmp_path, "data=image_folder", "data.root=pets", "data.image_size=16", "data.val_size=4",
                 "loss=cross_entropy", "model=cnn", "model.channels=[4,8]", "model.hidden=8")
    summary, run_dir = trained(result, tmp_path, "image_folder-softmax-cross_entropy-seed0")
    assert summary["task"] == "multiclass" and summary["classes"] == ["cat", "dog"] and summary["num_classes"] == 2
    assert "data: 20 train, 4 val, 5 test; 2 classes (multiclass), torch.uint8 inputs 3x16x16" in result.stdout
    image = tmp_path / "pets" / "test" / "dog" / "000.png"
    assert predict_main([str(run_dir), str(image), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "input,p_cat,p_dog,argmax"
    assert lines[1].startswith(f"{image},") and lines[1].rsplit(",", 1)[1] in ("cat", "dog")


@pytest.mark.slow
def test_cli_arrays_and_a_custom_target_model(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = rng.normal(size=(60, 6)).astype(np.float32) + y[:, None]
    np.savez(tmp_path / "train.npz", x=x, y=y, classes=np.array(["low", "mid", "high"]))
    (tmp_path / "my_nets.py").write_text(textwrap.dedent('''
        from torch import nn


        class Tiny(nn.Module):
            def __init__(self, in_shape, num_outputs, width=4):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(in_shape[0], width), nn.ReLU(), nn.Linear(width, num_outputs))

            def forward(self, x):
                return self.net(x)
        '''))
    result = cli(tmp_path, "data=arrays", "data.path=train.npz", "loss=cross_entropy", "model=custom",
                 "model._target_=my_nets.Tiny", "+model.width=5")
    summary, run_dir = trained(result, tmp_path, "arrays-softmax-cross_entropy-seed0")
    assert summary["task"] == "multiclass" and summary["classes"] == ["low", "mid", "high"]
    assert summary["config"]["model"] == {"name": "custom", "_target_": "my_nets.Tiny", "width": 5}
    assert "data: 48 train, 6 val, 6 test; 3 classes (multiclass), torch.float32 inputs 6" in result.stdout
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert state["net.net.0.weight"].shape == (5, 6)  # the user's module with width=5


def bad_inputs(tmp_path):
    """(overrides, the expected stderr line) of each CLI case; files made here."""
    tagged_images(tmp_path, {"a.png": "x", "b.png": "y"})
    write_csv(tmp_path / "missing.csv", ["image,tags", "a.png,x", "gone.png,y"])
    np.savez(tmp_path / "nan.npz", x=np.array([[0.0], [np.nan], [1.0]]), y=np.array([0, 1, 0]))
    constant_image(tmp_path / "one" / "only" / "0.png", 5)
    np.savez(tmp_path / "imgs.npz", x=np.zeros((12, 3, 8, 8), dtype=np.uint8), y=np.arange(12) % 2)
    return {
        "missing image": (["data=image_csv", "data.csv=missing.csv", "data.image_root=imgs"],
                          "missing.csv:3: image file missing: imgs/gone.png"),
        "non-finite features": (["data=arrays", "data.path=nan.npz"],
                                "nan.npz: x row 1 has NaN (features must be finite)"),
        "one class folder": (["data=image_folder", "data.root=one"],
                             "one: 1 class folder(s) (only); an image folder holds one folder per class, at least 2"),
        "pretrained offline": (["data=arrays", "data.path=imgs.npz", "loss=cross_entropy", "model=timm",
                                "model.arch=resnet18", "model.pretrained=true"],
                               "model.pretrained=true: cannot fetch the resnet18 weights ("),
    }


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing image", "non-finite features", "one class folder", "pretrained offline"])
def test_cli_bad_input_is_one_line(case, tmp_path):
    overrides, expected = bad_inputs(tmp_path)[case]
    result = cli(tmp_path, *overrides, env={"HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), result.stderr[-3000:]
    if case == "pretrained offline":
        assert lines[0].endswith("it needs network access to the Hugging Face Hub or the weights in its local "
                                 "cache; model.pretrained=false trains from scratch")


@pytest.mark.slow
def test_predicting_with_a_pretrained_run_fetches_nothing(tmp_path):
    """A model.pretrained=true run's weights are all in its checkpoint: predict rebuilds the model without
    fetching (here HF_HUB_OFFLINE=1 would make any fetch fail)."""
    import subprocess
    import sys

    from lossbench.engine import train

    from conftest import compose_config

    x = np.random.default_rng(0).integers(0, 256, size=(16, 3, 16, 16), dtype=np.uint8)
    np.savez(tmp_path / "imgs.npz", x=x, y=np.arange(16) % 2)
    cfg = compose_config(["data=arrays", f"data.path={tmp_path / 'imgs.npz'}", "data.val_size=4", "data.test_size=4",
                          "loss=cross_entropy", "model=timm", "model.arch=test_efficientnet_gn", *TINY])
    run_dir = tmp_path / "run"
    assert train(cfg, run_dir)["status"] == "completed"
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    saved["hyper_parameters"]["model"]["pretrained"] = True  # as a pretrained=true run records it
    torch.save(saved, checkpoint)
    torch.save(torch.from_numpy(x[:3]), tmp_path / "inputs.pt")
    result = subprocess.run([sys.executable, "-m", "lossbench.predict", str(run_dir), str(tmp_path / "inputs.pt")],
                            capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, **OFFLINE, "HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert [row["decisions"]["argmax"] in ("0", "1") for row in json.loads(result.stdout)["predictions"]] == [True] * 3
