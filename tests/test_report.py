"""The report on run directories written the way train.py writes them (summary.json + Lightning's
metrics.csv), with values chosen so every mean and std can be checked by hand."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread
from omegaconf import OmegaConf
from scipy import stats as sps

from lossbench.analysis.report import (
    build_report,
    main,
    markdown,
    offline_wandb_dirs,
    read_curves,
    sync_command,
    write_report,
)
from lossbench.errors import UserError
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
    assert report.comparisons == {}  # no --baseline / --pairs: no comparisons
    assert len(report.skipped) == 2


def test_report_files_hold_the_table_and_plots(sweep, tmp_path):
    written = write_report(build_report([sweep]), tmp_path / "out")
    assert sorted(p.name for p in written) == ["curves_multilabel.png", "final_multilabel.png", "report.csv",
                                               "report.json", "report.md"]
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


# --- comparisons, ranks, W&B ------------------------------------------------------------------------

def write_metrics_run(sweep, num, config, seed, metrics, task="multilabel"):
    config = copy.deepcopy(config)
    config["seed"] = seed
    config["run_name"] = f"{config['data']['name']}-{config['head']['name']}-{config['loss']['name']}-seed{seed}"
    run_dir = sweep / f"{num}_{config['run_name']}"
    write_summary(run_dir, {"status": "completed", "config": config, "metrics": metrics, "task": task,
                            "run_dir": str(run_dir)})
    return run_dir


@pytest.fixture(scope="module")
def three_configs():
    return {name: real_config(f"loss={name}") for name in ("bce_with_logits", "cross_entropy", "focal")}


def three_by_six(root, three_configs):
    """3 strategies x 6 seeds; per seed, bce = base, ce = base - d_i, focal = base - 2 d_i (d_i = i/100)."""
    num = 0
    for seed in range(6):
        base, d = 0.70 + 0.013 * (seed % 3) + 0.004 * seed, (seed + 1) / 100
        for k, config in enumerate(three_configs.values()):
            f1 = base - k * d
            write_metrics_run(root, num, config, seed, {"test/f1_macro": f1, "test/f1_micro": f1})
            num += 1
    return root


def test_all_pairs_of_three_strategies_over_six_seeds_are_holm_corrected(tmp_path, three_configs):
    sweep = three_by_six(tmp_path / "sweep", three_configs)
    report = build_report([sweep], pairs="all")
    rows = report.comparisons["multilabel"]
    assert [(r["a"], r["b"], r["metric"]) for r in rows] == [
        ("sigmoid+bce_with_logits", "sigmoid+focal", "test/f1_macro"),
        ("sigmoid+bce_with_logits", "softmax+cross_entropy", "test/f1_macro"),
        ("sigmoid+focal", "softmax+cross_entropy", "test/f1_macro")]
    # every pair differs by k * d_i with d_i = 1..6 / 100, all one sign and distinct: exact Wilcoxon 2/64;
    # Holm over 3: 3 * 2/64 = 0.094 > 0.05 -> no verdict, although every raw p is below 0.05
    for r in rows:
        c = r["comparison"]
        assert c.paired and c.n_a == 6 and c.p_wilcoxon == pytest.approx(2 / 64)
        assert r["p_wilcoxon_holm"] == pytest.approx(3 * 2 / 64)
        assert r["verdict"] == "no significant difference at n=6"
        assert r["detectable"] == math.inf  # 2/64 > 0.05/3: six seeds cannot give a verdict in this family
    # bce - focal = 2 d_i: mean 0.07, sd of (2, 4, ..., 12)/100 = 2 * sqrt(3.5) / 100
    bce_focal = rows[0]["comparison"]
    assert bce_focal.mean_diff == pytest.approx(0.07) and bce_focal.std_diff == pytest.approx(2 * math.sqrt(3.5) / 100)
    written = write_report(report, tmp_path / "out")
    assert {"report.json", "comparisons.csv", "differences_multilabel.png"} <= {p.name for p in written}
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    required = {"a", "b", "metric", "n", "mean_diff", "ci_low", "ci_high", "p_t", "p_wilcoxon", "p_t_holm",
                "p_wilcoxon_holm", "verdict"}
    assert len(data["comparisons"]) == 3 and all(required <= set(c) for c in data["comparisons"])
    assert [c["p_wilcoxon_holm"] for c in data["comparisons"]] == pytest.approx([3 * 2 / 64] * 3)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Family: Holm over the 3 comparison(s) of this table" in md
    assert "| sigmoid+bce_with_logits | sigmoid+focal | test/f1_macro | 6 pairs | +0.0700 |" in md
    assert "none (rank test cannot reach α/m)" in md
    csv_rows = list(csv.DictReader(open(tmp_path / "out" / "comparisons.csv")))
    assert [r["verdict"] for r in csv_rows] == ["no significant difference at n=6"] * 3


def test_a_baseline_comparison_gives_a_verdict_and_the_detectable_difference(tmp_path, three_configs):
    sweep = tmp_path / "sweep"
    for seed in range(10):  # ce = bce - (1..10)/1000 on macro-F1
        write_metrics_run(sweep, 2 * seed, three_configs["bce_with_logits"], seed, {"test/f1_macro": 0.8 + seed / 100})
        write_metrics_run(sweep, 2 * seed + 1, three_configs["cross_entropy"], seed,
                          {"test/f1_macro": 0.8 + seed / 100 - (seed + 1) / 1000})
    report = build_report([sweep], baseline="sigmoid+bce_with_logits")
    [row] = report.comparisons["multilabel"]
    assert (row["a"], row["b"]) == ("softmax+cross_entropy", "sigmoid+bce_with_logits")
    c = row["comparison"]
    assert c.p_wilcoxon == pytest.approx(2 / 1024) and c.wilcoxon_direction == -1 and c.t_direction == -1
    assert row["p_wilcoxon_holm"] == pytest.approx(2 / 1024)  # a family of one
    assert row["verdict"] == "a lower"
    # sd of (1..10)/1000 = sqrt(55/6)/1000; 80% power at 0.05 with 10 pairs needs d_z = 0.996 (see test_stats)
    assert row["detectable"] == pytest.approx(0.996 * math.sqrt(55 / 6) / 1000, rel=2e-3)
    with pytest.raises(UserError, match="--baseline='nope' is not a strategy of these runs; strategies: "):
        build_report([sweep], baseline="nope")
    with pytest.raises(UserError, match="--baseline and --pairs exclude each other"):
        build_report([sweep], baseline="sigmoid+bce_with_logits", pairs="all")


def test_counts_are_compared_as_integers_and_strategies_without_shared_seeds_unpaired(tmp_path, three_configs):
    sweep = tmp_path / "sweep"
    exact = {"bce_with_logits": [70, 75, 71, 80], "cross_entropy": [60, 62, 65]}  # matches of 128 samples
    num = 0
    for name, counts in exact.items():
        for i, k in enumerate(counts):
            seed = i if name == "bce_with_logits" else 10 + i  # no seed in common
            write_metrics_run(sweep, num, three_configs[name], seed,
                              {"test/f1_macro": 0.5, "test/exact_match": float(np.float32(k / 128)), "test/samples": 128.0})
            num += 1
    report = build_report([sweep], pairs="all", compare_metrics=["test/exact_match"])
    [row] = report.comparisons["multilabel"]
    c = row["comparison"]
    assert not c.paired and row["seeds"] == "none shared" and row["on"] == "integer counts (× 1/128)"
    assert (c.t_test, c.rank_test) == ("Welch t", "Mann-Whitney U")
    # every bce count above every ce count: U = 12 of 12; 1 of C(7, 3) = 35 assignments per side -> 2/35
    assert (c.rank_stat, c.p_wilcoxon) == (12, pytest.approx(2 / 35))
    ref = sps.ttest_ind(np.array(exact["bce_with_logits"]) / 128, np.array(exact["cross_entropy"]) / 128,
                        equal_var=False)
    assert c.p_t == pytest.approx(ref.pvalue, rel=1e-9)
    assert c.mean_diff == pytest.approx((np.mean(exact["bce_with_logits"]) - np.mean(exact["cross_entropy"])) / 128)
    assert "are **unpaired**: Welch t + Mann–Whitney U" in markdown(report)


def test_ranks_across_three_datasets_get_a_friedman_test_and_a_cd_diagram(tmp_path):
    sweep = tmp_path / "sweep"
    num = 0
    accs = {"synthetic": (0.9, 0.8, 0.7), "mnist": (0.99, 0.98, 0.5), "fashion_mnist": (0.9, 0.85, 0.84)}
    for data, values in accs.items():
        extra = ["data.multilabel=false"] if data == "synthetic" else []
        for loss, acc in zip(("cross_entropy", "bce_with_logits", "focal"), values, strict=True):
            config = real_config(f"data={data}", f"loss={loss}", *extra)
            for seed in range(2):
                write_metrics_run(sweep, num, config, seed, {"test/acc": acc + seed / 1000}, task="multiclass")
                num += 1
    report = build_report([sweep])
    ranks = report.ranks["multiclass"]
    f = ranks["friedman"]
    assert dict(zip(f.strategies, f.mean_ranks, strict=True)) == {
        "softmax+cross_entropy": 1.0, "sigmoid+bce_with_logits": 2.0, "sigmoid+focal": 3.0}
    # rank sums 3, 6, 9 over N = 3 settings: chi2 = 12/(3*3*4) * 126 - 36 = 6, p = exp(-3); CD 2.343 sqrt(12/18)
    assert (f.statistic, f.p) == (pytest.approx(6.0), pytest.approx(math.exp(-3)))
    assert f.critical_difference == pytest.approx(2.343 * math.sqrt(12 / 18), abs=1e-3)
    written = write_report(report, tmp_path / "out")
    image = imread(tmp_path / "out" / "cd_multiclass.png")
    assert image.shape[1] > 400 and image.std() > 0
    assert "Friedman test over 3 settings × 3 strategies: χ²_F = 6.000" in (tmp_path / "out" / "report.md").read_text()
    assert "cd_multiclass.png" in {p.name for p in written}


def test_multilabel_runs_with_reliability_bins_get_a_reliability_diagram(tmp_path, three_configs):
    sweep = tmp_path / "sweep"
    for seed in range(2):
        metrics = {"test/f1_macro": 0.5, "test/ece": 0.1}
        for b in range(15):
            metrics.update({f"test/reliability/{b:02d}/count": 10.0 + seed, f"test/reliability/{b:02d}/confidence":
                            (b + 0.5) / 15, f"test/reliability/{b:02d}/frequency": (b / 15) ** 2})
        write_metrics_run(sweep, seed, three_configs["bce_with_logits"], seed, metrics)
    report = build_report([sweep])
    written = write_report(report, tmp_path / "out")
    assert "reliability_multilabel.png" in {p.name for p in written}
    assert "test/ece" in report.metrics_by_task["multilabel"]
    from lossbench.analysis.report import reliability

    confidence, frequency, count = reliability(report.strategies[0])
    assert count.tolist() == [21.0] * 15 and frequency[3] == pytest.approx((3 / 15) ** 2)


@pytest.mark.slow
def test_report_is_logged_to_one_wandb_run_of_the_sweep_group(tmp_path, three_configs):
    from test_wandb import read_wandb_records, read_wandb_run

    sweep = three_by_six(tmp_path / "2026-11-22_10-00-00", three_configs)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
           "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_DATA_DIR": str(tmp_path / "wandb-data")}
    result = subprocess.run([sys.executable, "-m", "lossbench.report", str(sweep), "--pairs", "all", "--wandb", "on"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    [run_file] = list((sweep / "report" / "wandb").glob("offline-run-*/run-*.wandb"))
    run = read_wandb_run(run_file)
    assert (run["job_type"], run["group"], run["project"]) == ("report", "sweep-2026-11-22_10-00-00", "lossbench")
    # wandb stores a logged table or image as nested keys: <name>/_type, <name>/path, <name>/nrows, ...
    [row] = [r for r in run["history"] if "report/multilabel/comparisons/_type" in r]
    table = "report/multilabel/comparisons"
    assert (row[f"{table}/_type"], row[f"{table}/nrows"]) == ("table-file", 3)
    stored = json.loads((run_file.parent / "files" / row[f"{table}/path"]).read_text())
    verdicts = [dict(zip(stored["columns"], r, strict=True))["verdict"] for r in stored["data"]]
    expected = json.loads((sweep / "report" / "report.json").read_text())["comparisons"]
    assert verdicts == [c["verdict"] for c in expected]
    assert [dict(zip(stored["columns"], r, strict=True))["p_wilcoxon_holm"] for r in stored["data"]] == \
        pytest.approx([3 * 2 / 64] * 3)
    for image in ("report/final_multilabel", "report/differences_multilabel"):
        assert row[f"{image}/_type"] == "image-file" and (run_file.parent / "files" / row[f"{image}/path"]).is_file()
    assert run["summary"]["comparisons"] == 3 and run["exit_code"] == 0
    assert read_wandb_records(run_file)  # a readable, finished run file
