"""W&B Sweeps: the sweep files under ``configs/wandb_sweep/`` pass W&B's own schema, their grids (expanded by
W&B's sweep engine) are the runs of the Hydra sweep of the same preset, and one command an agent would run
trains offline with the preset's W&B group and head+loss job type. Hydra does not see the files."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException

from lossbench import losses
from test_wandb import read_wandb_run

from conftest import CONFIG_DIR, TINY, TINY_SYNTHETIC

SWEEP_FILES = sorted((Path(CONFIG_DIR) / "wandb_sweep").glob("*.yml"))


@pytest.fixture(scope="module")
def engine():
    """W&B's sweep engine (``wandb[sweeps]``), as ``wandb sweep --controller`` and W&B's server use it."""
    return pytest.importorskip("sweeps", reason="wandb's sweep engine: pip install -e '.[dev]' (wandb[sweeps])")


def load(path: Path) -> dict:
    from wandb.sdk.launch.sweeps.utils import load_sweep_config

    return load_sweep_config(str(path))


def grid(engine, config: dict) -> list[dict]:
    """Every run of a grid sweep, as W&B's engine proposes them: ``{"loss": {"value": ...}, ...}``."""
    runs = []
    while (run := engine.next_run(config, runs)) is not None:
        run.state = engine.RunState.finished
        runs.append(run)
    return [run.config for run in runs]


def agent_command(config: dict, args: dict) -> list[str]:
    """The command ``wandb agent`` runs for one run's ``args``, built as wandb's agent builds it
    (``wandb.wandb_agent.Agent._command_run``: W&B's macros, each replaced by its list of words)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    words = create_sweep_command_args({"args": args})
    words.update(interpreter=["python"], program=[config["program"]], env=["/usr/bin/env"])
    command = []
    for word in map(str, create_sweep_command(list(config["command"]))):
        command += (words.get(word[2:-1]) or []) if word.startswith("${") and word.endswith("}") else [word]
    return command


def preset_of(config: dict) -> str:
    [preset] = [w.split("=", 1)[1] for w in config["command"] if str(w).startswith("experiment=")]
    return preset


def hydra_sweep_runs(preset: str) -> set[frozenset[str]]:
    """The jobs of ``python -m lossbench.train -m experiment=<preset>``, as Hydra's basic sweeper splits them."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        params = compose(config_name="train", overrides=[f"experiment={preset}"],
                         return_hydra_config=True).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    [jobs] = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return {frozenset(job) for job in jobs}


def test_there_is_a_sweep_file_for_each_task():
    assert [p.stem for p in SWEEP_FILES] == ["multiclass_losses", "multilabel_losses"]


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[p.stem for p in SWEEP_FILES])
def test_sweep_file_passes_wandbs_schema_and_hands_its_parameters_to_hydra(path, engine):
    config = load(path)
    assert engine.schema_violations_from_proposed_config(config) == []
    assert engine.schema_violations_from_proposed_config({**config, "method": "gird"}) != []  # the check checks
    command = [str(w) for w in config["command"]]
    assert command[:4] == ["${env}", "python", "-m", "lossbench.train"] and command[-1] == "${args_no_hyphens}"
    assert "logger=wandb" in command


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[p.stem for p in SWEEP_FILES])
def test_wandb_grid_is_the_hydra_sweep_of_the_same_preset(path, engine):
    config = load(path)
    commands = [agent_command(config, args) for args in grid(engine, config)]
    fixed = [str(w) for w in config["command"][:-1]]
    assert all(c[:len(fixed)] == ["/usr/bin/env", *fixed[1:]] for c in commands)
    from_wandb = {frozenset(c[len(fixed):]) for c in commands}
    assert len(from_wandb) == len(commands) == 25
    assert from_wandb == hydra_sweep_runs(preset_of(config))


def test_the_sweep_folder_is_no_hydra_config_group():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        groups = GlobalHydra.instance().hydra.list_all_config_groups()  # what `--help` lists
        assert "loss" in groups and "wandb_sweep" not in groups
        with pytest.raises(MissingConfigException):
            compose(config_name="train", overrides=["+wandb_sweep=multiclass_losses"])


@pytest.mark.slow
def test_an_agents_command_trains_with_the_presets_group_and_job_type(engine, tmp_path):
    import subprocess

    from wandb.sdk.lib.config_util import save_config_file_from_dict

    path = Path(CONFIG_DIR) / "wandb_sweep" / "multilabel_losses.yml"  # synthetic data: nothing to download
    config = load(path)
    # a loss the preset does not train by default: the W&B parameter must reach the run
    [args] = [a for a in grid(engine, config) if a["loss"]["value"] == "abs_kl" and a["seed"]["value"] == 1]
    command = agent_command(config, args) + [*TINY, *TINY_SYNTHETIC, "output_root=out"]
    # what `wandb agent` puts into the run's environment (wandb/wandb_agent.py)
    sweep_id, run_id = "lbsweep01", "lbrun0001"
    params = tmp_path / "wandb" / f"sweep-{sweep_id}" / f"config-{run_id}.yaml"
    save_config_file_from_dict(str(params), args)
    env = {**os.environ, "WANDB_SWEEP_ID": sweep_id, "WANDB_RUN_ID": run_id, "WANDB_SWEEP_PARAM_PATH": str(params),
           "WANDB_MODE": "offline", "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
           "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "CUDA_VISIBLE_DEVICES": "",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # `python`: this one
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Ignoring project" not in result.stderr  # the sweep decides the project
    [summary] = (tmp_path / "out").rglob("summary.json")
    trained = json.loads(summary.read_text())["config"]
    assert (trained["loss"]["name"], trained["seed"], trained["data"]["multilabel"]) == ("abs_kl", 1, True)
    [record] = (tmp_path / "out").rglob(f"run-{run_id}.wandb")
    run = read_wandb_run(record)
    head = losses.loss_class("abs_kl").heads[0]
    assert (run["id"], run["group"], run["job_type"]) == (run_id, "multilabel_losses", f"{head}+abs_kl")
    assert run["config"]["loss"] == "abs_kl" and run["exit_code"] == 0


def test_a_sweep_file_without_a_preset_groups_its_runs_by_the_sweep_id(monkeypatch):
    from lossbench.loggers import wandb_group

    from conftest import compose_config

    cfg = compose_config(["logger=wandb"])
    assert wandb_group(cfg) is None  # a single run outside any sweep
    monkeypatch.setenv("WANDB_SWEEP_ID", "lbsweep01")  # set by `wandb agent` for each run it starts
    assert wandb_group(cfg) == "sweep-lbsweep01"
    assert wandb_group(compose_config(["logger=wandb", "logger.group=mine"])) == "mine"
