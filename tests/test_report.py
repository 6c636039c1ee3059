"""The report on run directories written the way train.py writes them (summary.json + Lightning's
metrics.csv), with values chosen so every mean and std can be checked by hand."""

from __future__ import annotations

import copy
import csv
import json
import math

import pytest
from matplotlib.image import imread
from omegaconf import OmegaConf

from lossbench.report import build_report, main, offline_wandb_dirs, read_curves, sync_command, write_report
from lossbench.summary import write_summary

from conftest import compose_config

CSV_HEADER = ["epoch", "step", "train/loss_epoch", "val/f1_macro", "val/loss"]


def real_config(*overrides: str) -> dict:
    return OmegaConf.to_container(compose_config(list(overrides)), resolve=True)


def write_run(sweep, num, config, seed, status="completed", f1=None, curve=(), task="multilabel"):
    """A run directory as a multirun job leaves it: ``<num>_<run name>/summary.json`` and ``metrics.csv``."""
    config = copy.deepcopy(config)
    config["seed"] = seed
    config["run_name"] = f"{config['data']['name']}-{config['head']['name']}-{config['loss']['name']}-seed{seed}"
    run_dir = sweep / f"{num}_{config['run_name']}"
    summary = {"status": status, "config": config, "metrics": {}, "run_dir": str(run_dir)}
    if status in ("completed", "diverged"):
        summary["task"] = task
    if status == "completed":
        summary["metrics"] = {"test/f1_macro": f1, "test/f1_micro": f1 / 2, "test/map": 0.9,
                              "test/exact_match": 0.1, "test/loss": 0.3}
    if status in ("failed", "skipped"):
        # train.py stores these configs unresolved
        summary["config"]["run_name"] = "${data.name}-${head.name}-${loss.name}-seed${seed}"
        summary["error"] = "ConfigError: head=softmax is not valid for loss=bce_with_logits; valid heads for " \
                           "bce_with_logits: sigmoid" if status == "skipped" else "RuntimeError: out of memory"
    write_summary(run_dir, summary)
    if curve:
        with open(run_dir / "metrics.csv", "w", newline="") as f:  # Lightning's CSVLogger layout
            writer = csv.writer(f)
            writer.writerow(CSV_HEADER)
            for epoch, value in enumerate(curve):
                writer.writerow([epoch, 4 * epoch + 3, "", value, 1 - value])
                writer.writerow([epoch, 4 * epoch + 3, 0.5, "", ""])
    return run_dir


@pytest.fixture(scope="module")
def configs():
    return {"bce": real_config("loss=bce_with_logits"), "ce": real_config("loss=cross_entropy"),
            "skip": real_config("loss=bce_with_logits", "head=softmax")}


@pytest.fixture
def sweep(tmp_path, configs):
    sweep = tmp_path / "multirun" / "2026-11-22_10-00-00"
    for seed, f1 in enumerate([0.5, 0.6, 0.7]):
        write_run(sweep, seed, configs["bce"], seed, f1=f1, curve=[f1 - 0.2, f1 - 0.1, f1])
    write_run(sweep, 3, configs["bce"], 3, status="diverged")
    write_run(sweep, 4, configs["bce"], 4, status="failed")
    for seed, f1 in enumerate([0.2, 0.4]):
        write_run(sweep, 5 + seed, configs["ce"], seed, f1=f1, curve=[f1, f1])
    write_run(sweep, 7, configs["skip"], 0, status="skipped")
    write_run(sweep, 8, configs["skip"], 1, status="skipped")
    return sweep


def test_strategies_average_completed_runs_and_count_the_others(sweep):
    report = build_report([sweep])
    assert [s.label for s in report.strategies] == ["sigmoid+bce_with_logits", "softmax+cross_entropy"]
    bce, ce = report.strategies
    assert (len(bce.completed), bce.count("diverged"), bce.count("failed")) == (3, 1, 1)  # failed run joins by config
    assert bce.task == "multilabel"
    stats = bce.stats("test/f1_macro")
    assert (stats.n, stats.mean, stats.std) == (3, pytest.approx(0.6), pytest.approx(0.1))  # sample std, ddof=1
    stats = ce.stats("test/f1_macro")
    assert (stats.mean, stats.std) == (pytest.approx(0.3), pytest.approx(math.sqrt(0.02)))
    assert report.metrics_by_task == {"multilabel": ["test/f1_macro", "test/f1_micro", "test/map", "test/exact_match"]}
    assert len(report.skipped) == 2


def test_report_files_hold_the_table_and_plots(sweep, tmp_path):
    written = write_report(build_report([sweep]), tmp_path / "out")
    assert sorted(p.name for p in written) == ["curves_multilabel.png", "final_multilabel.png", "report.csv",
                                               "report.md"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert ("| sigmoid+bce_with_logits | 3 | 1 | 1 | 0.6000 ± 0.1000 | 0.3000 ± 0.0500 | 0.9000 ± 0.0000 | "
            "0.1000 ± 0.0000 |") in md
    assert "| softmax+cross_entropy | 2 | 0 | 0 | 0.3000 ± 0.1414 |" in md
    assert "- head=softmax loss=bce_with_logits: ConfigError: head=softmax is not valid" in md and "(×2)" in md
    rows = list(csv.DictReader(open(tmp_path / "out" / "report.csv")))
    assert [(r["strategy"], r["runs"], r["diverged"], r["failed"], r["seeds"]) for r in rows] == [
        ("sigmoid+bce_with_logits", "3", "1", "1", "0 1 2"), ("softmax+cross_entropy", "2", "0", "0", "0 1")]
    assert float(rows[0]["test/f1_macro_mean"]) == pytest.approx(0.6)
    assert float(rows[1]["test/f1_macro_std"]) == pytest.approx(math.sqrt(0.02))
    for name in ("final_multilabel.png", "curves_multilabel.png"):
        image = imread(tmp_path / "out" / name)
        assert image.shape[0] > 200 and image.shape[1] > 400 and image.std() > 0  # a drawn, non-blank picture
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind


def test_validation_curves_come_from_lightning_metrics_csv(sweep):
    [run_dir] = sweep.glob("1_*")
    curves = read_curves(run_dir)
    assert curves == {"val/f1_macro": {0: pytest.approx(0.4), 1: pytest.approx(0.5), 2: pytest.approx(0.6)},
                      "val/loss": {0: pytest.approx(0.6), 1: pytest.approx(0.5), 2: pytest.approx(0.4)}}


def test_labels_name_only_what_differs(tmp_path, configs):
    base = real_config("loss=partition_softmax")
    for num, (variant, lr) in enumerate([("kl_mse", 0.001), ("abs_kl_product", 0.001), ("kl_mse", 0.01)]):
        config = copy.deepcopy(base)
        config["loss"]["variant"], config["optimizer"]["lr"] = variant, lr
        write_run(tmp_path, num, config, 0, f1=0.5)
    write_run(tmp_path, 3, configs["bce"], 0, f1=0.5)  # lacks loss.variant and loss.eps: not named for them
    labels = [s.label for s in build_report([tmp_path]).strategies]
    assert labels == ["partition+partition_softmax variant=abs_kl_product lr=0.001",
                      "partition+partition_softmax variant=kl_mse lr=0.001",
                      "partition+partition_softmax variant=kl_mse lr=0.01",
                      "sigmoid+bce_with_logits lr=0.001"]


def test_multiclass_runs_get_their_own_table(tmp_path):
    config = real_config("loss=cross_entropy", "data.multilabel=false")
    for seed in range(2):
        run_dir = write_run(tmp_path, seed, config, seed, task="multiclass", f1=0.5)
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text())
        summary["metrics"] = {"test/acc": 0.8 + seed / 10, "test/nll": 0.5, "test/ece": 0.05}
        write_summary(run_dir, summary)
    report = build_report([tmp_path])
    assert report.metrics_by_task == {"multiclass": ["test/acc", "test/nll", "test/ece"]}
    assert report.strategies[0].stats("test/acc").mean == pytest.approx(0.85)


def test_cli_prints_the_table_and_writes_into_the_sweep(sweep, capsys):
    assert main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "sigmoid+bce_with_logits" in out and "0.6000 ± 0.1000" in out and "skipped combinations" in out
    assert (sweep / "report" / "report.md").exists() and (sweep / "report" / "final_multilabel.png").exists()


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: no summary.json under {tmp_path}; pass a sweep or run directory\n"
    assert main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'missing'} does not exist")
    assert main([str(tmp_path), str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: 2 directories given: pass --out DIR for the report\n"


def test_sync_command_covers_the_offline_runs_not_yet_uploaded(tmp_path):
    for job in ("0_a", "1_b", "2_c"):
        run = tmp_path / job / "wandb" / "offline-run-20261122_100000-abc" / "run-abc.wandb"
        run.parent.mkdir(parents=True)
        run.write_bytes(b":W&B")
    (tmp_path / "2_c/wandb/offline-run-20261122_100000-abc/run-abc.wandb.synced").touch()  # uploaded already
    dirs = offline_wandb_dirs([tmp_path])
    assert dirs == [tmp_path / "0_a" / "wandb", tmp_path / "1_b" / "wandb"]
    assert sync_command([tmp_path], dirs) == f"wandb sync {tmp_path}/*/wandb"
    assert sync_command([tmp_path / "0_a"], dirs[:1]) == f"wandb sync {tmp_path}/0_a/wandb"
