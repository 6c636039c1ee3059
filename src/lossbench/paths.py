"""Where things are: the shipped config tree and the names of the files in a run directory.

A run directory holds ``summary.json`` (:mod:`lossbench.summary`), ``metrics.csv`` (the CSV logger),
``checkpoints/last.ckpt`` (replaced after every epoch), ``thresholds.json`` (multi-label decision rules)
and ``.hydra/config.yaml`` (the composed config). Every module takes these names from here.
"""

from __future__ import annotations

from pathlib import Path

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
THRESHOLDS_FILE = "thresholds.json"
CHECKPOINT = Path("checkpoints") / "last.ckpt"
HYDRA_CONFIG = Path(".hydra") / "config.yaml"


def _config_dir() -> Path:
    """``lossbench/configs`` inside an installed wheel (the build maps the top-level ``configs/`` there);
    in a source checkout or an editable install, the checkout's own ``configs/``."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "configs", package.parents[1] / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise RuntimeError(f"lossbench's configs are missing: neither {package / 'configs'} nor "
                       f"{package.parents[1] / 'configs'} holds train.yaml; reinstall lossbench")


CONFIG_DIR: Path = _config_dir()
