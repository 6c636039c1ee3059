"""The issue-10 reproduction on tiny settings (``--quick``): real MNIST / synthetic runs, real report."""

from __future__ import annotations

import csv
import json

import pytest

from lossbench import losses
from lossbench.paths import CONFIG_DIR
from lossbench.reproduce import job_overrides, load_protocol, main, reproduce, seed_jobs
from lossbench.stats import paired_test


def _rows(report_dir):
    with open(report_dir / "runs.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_quick_mnist_reproduction_reports_resumes_and_repeats_exactly(mnist_root, tmp_path):
    out, runs = tmp_path / "report", tmp_path / "runs"
    first = reproduce("mnist", out, runs, device="cpu", n_jobs=1, quick=True, data_root=str(mnist_root),
                      commit="abc1234")
    # 2 losses x 2 rates tuned; 3 strategies x 2 seeds, one of which may share the tuned runs' configuration
    assert 8 <= first["trained"] <= 10
    text = (out / "report.md").read_text()
    assert "## MNIST, mlp" in text and "Rate tuning (validation split)" in text
    assert "- lossbench commit: abc1234" in text
    assert "10 runs trained by this command, 1 at a time" in text or "9 runs trained by this command" in text
    for name in ("runs.csv", "results.json", "per_seed_mnist.png", "differences.png"):
        assert (out / name).stat().st_size > 0, name

    rows = _rows(out)
    assert len(rows) == 6 and {r["strategy"] for r in rows} == {"ce_tuned", "bce_tuned", "bce_sum_classes"}
    for r in rows:  # exact error counts on the 512 test images
        assert int(r["test/errors"]) == round((1 - float(r["test/acc"])) * 512)
        assert r["test_size"] == "512"

    # the statistics in the report are those of the per-seed numbers in runs.csv
    results = json.loads((out / "results.json").read_text())
    tuned = next(c for c in results["comparisons"] if (c["a"], c["b"]) == ("ce_tuned", "bce_tuned"))
    acc = {s: [float(r["test/acc"]) for r in sorted(rows, key=lambda r: int(r["seed"])) if r["strategy"] == s]
           for s in ("ce_tuned", "bce_tuned")}
    assert tuned["test"]["mean_diff"] == pytest.approx(paired_test(acc["ce_tuned"], acc["bce_tuned"]).mean_diff)
    assert tuned["verdict"] in ("supported", "contradicted", "no significant difference at n=2")
    assert tuned["verdict"] in text

    # a killed reproduction continues: only the run without a summary is trained, to the same numbers
    victim = runs / rows[0]["run"] / "summary.json"
    victim.unlink()
    again = reproduce("mnist", out, runs, device="cpu", n_jobs=1, quick=True, data_root=str(mnist_root))
    assert again["trained"] == 1
    assert _rows(out) == rows


@pytest.mark.slow
def test_quick_multilabel_reproduction_compares_label_counts(tmp_path):
    result = reproduce("multilabel", tmp_path / "report", tmp_path / "runs", device="cpu", n_jobs=1, quick=True)
    rows = _rows(tmp_path / "report")
    assert len(rows) == 3 * 2 * 2  # losses x optimizers x seeds
    assert all(r["status"] == "completed" for r in rows)
    assert all(float(r["test/true_count"]) > 0 for r in rows)
    claims = {(c["a"], c["b"], c["metric"]): c for c in result["results"]}
    count = claims[("abs_kl+adam", "bce_with_logits+adam", "test/pred_count")]
    assert count["claim"] == "less" and "verdict" in count
    assert ("partition_kl_mse+adadelta", "bce_with_logits+adam", "test/f1_macro") in claims
    text = (tmp_path / "report" / "report.md").read_text()
    assert "predicted labels" in text and "true labels" in text


def test_protocols_pair_every_comparison_with_defined_strategies():
    for preset in ("mnist", "multilabel"):
        protocol = load_protocol(preset)
        assert len(protocol.seeds) >= 6 and protocol.tune_seed not in protocol.seeds
        for comp in protocol.comparisons:
            assert comp["claim"] in ("greater", "less")
            assert {comp["a"], comp["b"]} <= set(protocol.strategies), comp
    assert len(load_protocol("mnist").seeds) >= 10


def test_a_loss_missing_from_the_checkout_is_reported_not_run(monkeypatch):
    monkeypatch.setattr(losses, "available", lambda: ["bce_with_logits", "cross_entropy"])
    protocol = load_protocol("multilabel")
    assert set(protocol.strategies) == {f"{lo}+{o}" for lo in ("bce_with_logits", "cross_entropy")
                                        for o in ("adam", "adadelta")}
    assert any("zlpr" in m for m in protocol.missing)


def test_cli_rejects_bad_options_with_one_line(capsys, tmp_path):
    assert main(["mnist", "--jobs", "0", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: --jobs=0 is invalid; allowed: an integer >= 1"
    assert main(["mnist", "--device", "tpu", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: --device='tpu' is invalid; allowed: cpu, gpu, auto"


def _compose(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_cpu_profiles_keep_the_issues_requirements_and_compose():
    full, cpu = load_protocol("mnist"), load_protocol("mnist", profile="cpu")
    assert set(cpu.datasets) == {"mnist", "fashion_mnist"} and set(cpu.models) == {"cnn", "mlp"}
    assert len(cpu.seeds) >= 10 and cpu.tune_seed not in cpu.seeds and len(cpu.lr_grid["adam"]) >= 3
    assert cpu.strategies == full.strategies and cpu.comparisons == full.comparisons
    assert {"ce_tuned", "bce_tuned", "ce_same", "bce_same", "bce_sum_classes"} <= set(cpu.strategies)
    jobs = {(j.dataset, j.model): j for j in seed_jobs(cpu, {})}
    cnn = _compose(job_overrides(cpu, jobs["fashion_mnist", "cnn"], "cpu", None))
    mlp = _compose(job_overrides(cpu, jobs["mnist", "mlp"], "cpu", None))
    assert (cnn.model.channels, cnn.data.train_size, cnn.data.test_size, cnn.trainer.max_epochs) == ([8, 16], 4000, 5000, 3)
    assert (mlp.model.hidden, mlp.data.train_size, mlp.trainer.max_epochs) == ([256, 256], 4000, 3)
    assert cnn.trainer.accelerator == "cpu" and cnn.trainer.deterministic

    full, cpu = load_protocol("multilabel"), load_protocol("multilabel", profile="cpu")
    assert set(cpu.datasets) == {"synthetic", "mnist_multi"} and len(cpu.seeds) >= 3
    assert cpu.strategies == full.strategies and cpu.comparisons == full.comparisons
    assert {s.optimizer for s in cpu.strategies.values()} == {"adam", "adadelta"}
    assert {s.loss for s in cpu.strategies.values()} >= {"bce_with_logits", "bce_manual", "abs_kl", "cross_entropy",
                                                          "partition_softmax"}
    job = next(j for j in seed_jobs(cpu, {}) if j.dataset == "mnist_multi")
    multi = _compose(job_overrides(cpu, job, "cpu", None))
    assert (multi.data.train_size, multi.data.test_size, multi.trainer.max_epochs) == (4000, 3000, 4)


def test_cli_rejects_quick_with_another_profile(capsys, tmp_path):
    assert main(["mnist", "--quick", "--profile", "cpu", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: --quick contradicts --profile cpu; give one of them"
