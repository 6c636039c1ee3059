"""The package layout the wheel is built from: every package of src/ is listed in pyproject.toml and the
config tree is found in one place."""

from __future__ import annotations

from pathlib import Path

import tomllib

from lossbench.paths import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]


def test_every_source_package_is_listed_for_the_wheel():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO / "src").parts) for p in (REPO / "src").rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"
    assert "lossbench.configs" in listed


def test_configs_are_found_in_the_checkout():
    assert CONFIG_DIR == REPO / "configs"
    assert (CONFIG_DIR / "train.yaml").is_file()
