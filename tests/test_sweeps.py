"""Sweeps: launcher and experiment configs through Hydra's compose API; a real joblib multirun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate

from lossbench.build import build_datamodule
from lossbench.config import check_combination, validate_names

from conftest import CONFIG_DIR, TINY, run_cli

PRESETS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
SWEEP_PRESETS = [p for p in PRESETS if not p.startswith("reproduce_")]  # reproduce_* drive scripts/reproduce.py


def compose_with_hydra(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def test_joblib_launcher_config_composes():
    launcher = compose_with_hydra(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]).hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert launcher.n_jobs == 2 and launcher.prefer == "processes"


def test_slurm_launcher_config_composes_and_instantiates():
    cfg = compose_with_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=30"])
    launcher = cfg.hydra.launcher
    # lossbench's launcher (submitit's, with the request checked before submitting); no GPU by default
    assert launcher._target_ == "hydra_plugins.lossbench_slurm.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", None, 30)
    # the plugin accepts every key (no cluster needed to build the launcher; only to submit)
    built = instantiate(launcher)
    assert built.params["partition"] == "gpu" and built.params["gpus_per_node"] is None
    assert built.params["submitit_folder"].endswith(".submitit/%j")


@pytest.mark.parametrize("preset", SWEEP_PRESETS)
def test_experiment_preset_sweeps_only_valid_combinations(preset):
    params = dict(compose_with_hydra([f"experiment={preset}"]).hydra.sweeper.params)
    assert params, f"{preset} defines no hydra.sweeper.params"
    seeds = OverridesParser.create().parse_override(f"seed={params.pop('seed')}")
    assert len(list(seeds.sweep_string_iterator())) >= 5
    # every combination of the other swept keys is a valid run (the seed cannot change that)
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    [strategies] = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    assert len(strategies) >= 2
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for overrides in strategies:
            run = compose(config_name="train", overrides=[f"experiment={preset}", *overrides])
            validate_names(run)
            task = build_datamodule(run).task  # built, not loaded: no data is read
            check_combination(task, run.head.name, run.loss.name)  # raises on a pair the sweep would skip


# trained jobs of 250 steps (a few seconds): longer than a worker process takes to start, so that two
# workers' jobs can overlap at all
LONGER = [o for o in TINY if not o.startswith(("trainer.limit_train_batches", "data.batch_size"))] + [
    "data.train_size=4000", "data.val_size=128", "data.test_size=128", "data.batch_size=16"]


@pytest.mark.slow
def test_joblib_sweep_runs_jobs_in_parallel_and_skips_invalid_pairs(tmp_path):
    result = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"output_root={tmp_path}",
                      "loss=bce_with_logits,cross_entropy", "head=sigmoid,softmax", *LONGER], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [sweep] = list((tmp_path / "multirun").iterdir())
    summaries = {p.parent.name.split("_", 1)[1]: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    assert len(list(sweep.glob("*/summary.json"))) == 4  # every job has its own directory
    statuses = {name: s["status"] for name, s in summaries.items()}
    assert statuses == {"synthetic-sigmoid-bce_with_logits-seed0": "completed",
                        "synthetic-softmax-cross_entropy-seed0": "completed",
                        "synthetic-softmax-bce_with_logits-seed0": "skipped",
                        "synthetic-sigmoid-cross_entropy-seed0": "skipped"}
    skipped = summaries["synthetic-sigmoid-cross_entropy-seed0"]
    assert "head=sigmoid is not valid for loss=cross_entropy; valid heads for cross_entropy: softmax" in skipped["error"]
    # the reason is logged in the job's own log too
    [job_dir] = sweep.glob("*_synthetic-sigmoid-cross_entropy-seed0")
    assert "head=sigmoid is not valid for loss=cross_entropy" in (job_dir / "train.log").read_text()
    for name, summary in summaries.items():
        if summary["status"] == "completed":
            assert summary["metrics"]["test/f1_macro"] is not None
            assert (Path(summary["run_dir"]) / "metrics.csv").exists() and name in summary["run_dir"]
    # in parallel: some two jobs ran at the same time -- one started (Hydra wrote its .hydra/config.yaml)
    # before the other ended (its summary.json); one after the other, each starts after the previous ended
    spans = [((job / ".hydra" / "config.yaml").stat().st_mtime_ns, (job / "summary.json").stat().st_mtime_ns)
             for job in sorted(p.parent for p in sweep.glob("*/summary.json"))]
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:]), spans
