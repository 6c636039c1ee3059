"""lossbench.predict: load a real trained run, predict on its own test inputs, check against its summary."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
import torch
from torchvision.io import write_png

from lossbench.build import build_datamodule
from lossbench.engine import train
from lossbench.errors import DataError
from lossbench.paths import THRESHOLDS_FILE
from lossbench.predict import load_run, main

from conftest import TINY, TINY_SYNTHETIC, compose_config


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory):
    """A tiny real synthetic multi-label run, and its whole test split."""
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_config(["data=synthetic", *TINY_SYNTHETIC, *TINY, "data.imbalance=2.0"])
    summary = train(cfg, run_dir)
    dm = build_datamodule(cfg)
    dm.setup()
    return run_dir, summary, dm.splits["test"].x


def test_python_predict_reproduces_the_summary(multilabel_run):
    run_dir, summary, x = multilabel_run
    predictor = load_run(run_dir)
    out = predictor.predict(x, rule="all")
    assert list(out.decisions) == ["fixed", "per_class", "global", "top_k"]
    m = summary["metrics"]
    for rule, decided in out.decisions.items():
        assert decided.shape == (len(x), 10)
        assert decided.sum(dim=1).float().mean().item() == pytest.approx(m[f"test/rule/{rule}/pred_count"])
    assert out.decisions["fixed"].sum(dim=1).float().mean().item() == pytest.approx(m["test/pred_count"])
    # the reloaded module is the trained one: its own head gives the same probabilities and decisions
    raw = predictor.raw(x)
    assert torch.equal(out.probabilities, torch.sigmoid(raw))
    assert torch.equal(out.decisions["fixed"], predictor.module.head.decide(raw, "multilabel"))
    thresholds = json.loads((run_dir / THRESHOLDS_FILE).read_text())
    per_class = torch.tensor(list(thresholds["per_class"].values()))
    assert torch.equal(out.decisions["per_class"], (out.probabilities >= per_class).long())
    assert predictor.predict(x[:3]).decisions.keys() == {"fixed"}  # default: the headline rule


def test_summary_records_the_class_names(multilabel_run):
    run_dir, summary, _ = multilabel_run
    expected = [f"class_{c}" for c in range(10)]
    assert summary["num_classes"] == 10 and summary["classes"] == expected
    assert json.loads((run_dir / "summary.json").read_text())["classes"] == expected
    assert load_run(run_dir).classes == expected


def test_predict_rejects_inputs_of_the_wrong_shape(multilabel_run):
    predictor = load_run(multilabel_run[0])
    with pytest.raises(DataError, match=r"inputs have shape \(4, 5\); this run expects \(N, 32\)"):
        predictor.predict(torch.zeros(4, 5))


def test_cli_writes_json_and_csv(multilabel_run, tmp_path, capsys):
    run_dir, _, x = multilabel_run
    inputs = tmp_path / "inputs.pt"
    torch.save(x[:5], inputs)
    expected = load_run(run_dir).predict(x[:5], rule=["per_class", "top_k"])

    assert main([str(run_dir), str(inputs), "--rule", "per_class", "--rule", "top_k", "--out",
                 str(tmp_path / "out.json")]) == 0
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["classes"] == [f"class_{c}" for c in range(10)] and data["headline"] == "fixed"
    rows = data["predictions"]
    assert [r["input"] for r in rows] == [f"inputs.pt[{i}]" for i in range(5)]
    for i, row in enumerate(rows):
        assert list(row["probabilities"].values()) == pytest.approx(expected.probabilities[i].tolist(), abs=1e-6)
        for rule in ("per_class", "top_k"):
            chosen = expected.decisions[rule][i].nonzero().flatten().tolist()
            assert row["decisions"][rule] == [f"class_{c}" for c in chosen]

    assert main([str(run_dir), str(inputs), "--rule", "all", "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(table) == 5
    assert list(table[0])[-4:] == ["fixed", "per_class", "global", "top_k"]
    assert float(table[0]["p_class_3"]) == pytest.approx(float(expected.probabilities[0, 3]), abs=1e-6)
    assert table[0]["top_k"].split(";") == rows[0]["decisions"]["top_k"]


@pytest.mark.parametrize(("case", "message"), [
    ("no_run", "error: {tmp}/missing: no such run directory"),
    ("no_checkpoint", "error: {tmp}/empty/checkpoints/last.ckpt: no checkpoint"),
    ("bad_rule", "error: rule 'count' is not available for this run; allowed: all, fixed, per_class, global, top_k"),
    ("bad_shape", "error: inputs have shape (2, 3); this run expects (N, 32)"),
    ("not_a_tensor", "error: {tmp}/inputs.pt: holds a dict; expected one tensor (N, *input_shape)"),
    ("image_for_features", "error: {tmp}/a.png: this run's inputs have shape (32,), not images"),
])
def test_cli_errors_are_one_line(case, message, multilabel_run, tmp_path, capsys):
    run_dir = multilabel_run[0]
    inputs = tmp_path / "inputs.pt"
    torch.save(multilabel_run[2][:2], inputs)
    args = {"no_run": [str(tmp_path / "missing"), str(inputs)],
            "no_checkpoint": [str(tmp_path / "empty"), str(inputs)],
            "bad_rule": [str(run_dir), str(inputs), "--rule", "count"],
            "bad_shape": [str(run_dir), str(inputs)],
            "not_a_tensor": [str(run_dir), str(inputs)],
            "image_for_features": [str(run_dir), str(tmp_path / "a.png")]}[case]
    (tmp_path / "empty").mkdir()
    if case == "bad_shape":
        torch.save(torch.zeros(2, 3), inputs)
    if case == "not_a_tensor":
        torch.save({"x": torch.zeros(2, 32)}, inputs)
    write_png(torch.zeros(1, 8, 8, dtype=torch.uint8), str(tmp_path / "a.png"))
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message.format(tmp=tmp_path))


@pytest.mark.slow
def test_module_cli_predicts_mnist_images(mnist_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    cfg = compose_config(["data=mnist", f"data.root={mnist_root}", "loss=cross_entropy", *TINY, "data.test_size=4"])
    summary = train(cfg, run_dir)
    assert not any(k.startswith("test/rule/") for k in summary["metrics"])  # single-label: argmax only
    assert json.loads((run_dir / THRESHOLDS_FILE).read_text())["rules"] == ["argmax"]
    dm = build_datamodule(cfg)
    dm.setup()
    images = dm.splits["test"].x[:3]  # uint8 (3, 1, 28, 28)
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"digit{i}.png")
        write_png(image, str(paths[-1]))
    # an RGB, 56x56 copy of the first digit: converted to grayscale 28x28 on the way in
    paths.append(tmp_path / "digit0_rgb56.png")
    write_png(images[0].repeat(3, 1, 1).repeat_interleave(2, dim=1).repeat_interleave(2, dim=2), str(paths[-1]))

    result = subprocess.run([sys.executable, "-m", "lossbench.predict", str(run_dir), *map(str, paths)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)["predictions"]
    predictor = load_run(run_dir)
    own = predictor.raw(images).argmax(dim=1).tolist()
    assert [r["decisions"]["argmax"] for r in rows[:3]] == [predictor.classes[c] for c in own]
    assert rows[3]["decisions"]["argmax"] in predictor.classes
    assert sum(rows[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)

    capsys.readouterr()  # drop the training run's output
    assert main([str(run_dir), str(tmp_path / "nope.png")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope.png'}: no such input file"
