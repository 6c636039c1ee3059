"""The package as users install it: a wheel with the config tree inside, console scripts that run from any
folder, and users' own config folders and experiment presets without forking."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import tomllib

from lossbench.paths import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
TINY = ["trainer.max_epochs=1", "trainer.progress_bar=none", "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "data.train_size=256", "data.val_size=64",
        "data.test_size=64"]


def test_every_source_package_is_listed_for_the_wheel():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO / "src").parts) for p in (REPO / "src").rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"
    assert "lossbench.configs" in listed


def test_configs_are_found_in_the_checkout():
    assert CONFIG_DIR == REPO / "configs"
    assert (CONFIG_DIR / "train.yaml").is_file()


def test_every_console_script_points_at_a_main_function():
    import importlib

    for name, target in SCRIPTS.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment with lossbench installed from a wheel built from this checkout; its
    dependencies come from the project's environment (no network)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # building writes build/ and *.egg-info: never into the checkout
    source.mkdir()
    for part in ("pyproject.toml", "README.md", "src", "configs"):
        copy = shutil.copytree if (REPO / part).is_dir() else shutil.copy
        copy(REPO / part, source / part, **({"ignore": shutil.ignore_patterns("__pycache__", "*.egg-info")}
                                             if (REPO / part).is_dir() else {}))
    dist = tmp / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", str(source), "-w", str(dist)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    [wheel] = dist.glob("lossbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    yamls = sorted(n for n in names if n.endswith(".yaml"))
    assert "lossbench/configs/train.yaml" in yamls
    assert len(yamls) == len(list(CONFIG_DIR.rglob("*.yaml")))  # the whole tree, not just the top file
    sweeps = sorted(n for n in names if n.endswith(".yml"))  # the W&B sweep files
    assert sweeps and sweeps == sorted(f"lossbench/configs/wandb_sweep/{p.name}"
                                       for p in (CONFIG_DIR / "wandb_sweep").glob("*.yml"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                              "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # the project's environment supplies torch & co. (a plain path line: its own .pth files, the editable
    # install of this checkout among them, are not run)
    Path(purelib, "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def _run(venv: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_wheel_trains_from_a_folder_outside_the_checkout(installed, tmp_path):
    where = _run(installed, [str(installed / "bin" / "python"), "-c",
                             "import lossbench, lossbench.paths as p; print(lossbench.__file__); print(p.CONFIG_DIR)"], tmp_path)
    module_file, config_dir = where.stdout.split()
    assert str(installed) in module_file and str(REPO) not in module_file  # the wheel's copy, not the checkout
    assert Path(config_dir) == Path(module_file).parent / "configs"
    result = _run(installed, [str(installed / "bin" / "lossbench-train"), *TINY, "output_root=out"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [summary] = (tmp_path / "out").rglob("summary.json")
    assert json.loads(summary.read_text())["status"] == "completed"
    for name in SCRIPTS:
        assert (installed / "bin" / name).exists(), name


@pytest.mark.slow
def test_a_users_own_config_folder_adds_an_experiment_preset(installed, tmp_path):
    mine = tmp_path / "my_configs" / "experiment"
    mine.mkdir(parents=True)
    (mine / "tiny_ce.yaml").write_text("# @package _global_\ndefaults:\n  - override /loss: focal\n"
                                       "data:\n  train_size: 256\n  val_size: 64\n  test_size: 64\nseed: 7\n")
    args = [str(installed / "bin" / "lossbench-train"), "hydra.searchpath=[file://my_configs]", "experiment=tiny_ce",
            *TINY[:5], "output_root=out"]
    result = _run(installed, args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [summary] = (tmp_path / "out").rglob("summary.json")
    config = json.loads(summary.read_text())["config"]
    assert (config["loss"]["name"], config["seed"], config["data"]["train_size"]) == ("focal", 7, 256)
    # the same folder by --config-dir
    result = _run(installed, [*args[:1], "--config-dir", "my_configs", *args[2:], "output_root=out2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(next((tmp_path / "out2").rglob("summary.json")).read_text())["config"]["seed"] == 7


def test_hydras_plugin_scan_finds_the_slurm_launcher_in_this_environment(tmp_path):
    # Hydra accepts a launcher only if its plugin scan (pkgutil over hydra_plugins.__path__) lists it; an
    # editable install in setuptools' default mode hides src/hydra_plugins from that scan
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("from hydra.core.plugins import Plugins; from hydra.plugins.launcher import Launcher; "
            "print(sorted(f'{p.__module__}.{p.__name__}' for p in Plugins.instance().discover(Launcher)))")
    found = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                           check=True).stdout
    assert "hydra_plugins.lossbench_slurm.SlurmLauncher" in found, found
