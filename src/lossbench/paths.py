"""Where things are: the shipped config tree and the names of the files in a run directory.

A run directory holds ``summary.json`` (``lossbench.summary``), ``metrics.csv`` (the CSV logger),
``checkpoints/last.ckpt`` (replaced after every epoch), ``thresholds.json`` (multi-label decision rules)
and ``.hydra/config.yaml`` (the composed config). Every module takes these names from here.
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime, timedelta
from pathlib import Path

from omegaconf import OmegaConf

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
THRESHOLDS_FILE = "thresholds.json"
CHECKPOINT = Path("checkpoints") / "last.ckpt"
# beside the checkpoint: which live process trains into it or continues from it (lossbench/locks.py)
CHECKPOINT_LOCK = Path("checkpoints") / "last.ckpt.lock"
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


_last_stamp = datetime.min


def unique_folder_name() -> str:
    """``2026-12-02_04-36-02.123456-4821-3fa9``: start time to the microsecond, process id, 16 random bits.

    The name of a run folder (``hydra.run.dir``) and of a sweep folder (``hydra.sweep.dir``). Within one
    process the times strictly increase (a repeat moves on by a microsecond); two processes of one host
    never share a pid; processes of several hosts writing to one shared disk would need the same
    microsecond, pid and random bits. Names sort by start time.
    """
    global _last_stamp
    stamp = max(datetime.now(), _last_stamp + timedelta(microseconds=1))
    _last_stamp = stamp
    return f"{stamp:%Y-%m-%d_%H-%M-%S.%f}-{os.getpid()}-{secrets.token_hex(2)}"


# ${lossbench.unique:} in configs/train.yaml. Cached (like Hydra's ${now:}): resolved once per config, so a
# job's folder, its .hydra/ and Lightning's DDP processes (which get hydra.run.dir as resolved) agree, and
# Hydra copies the cache into every job of a sweep, so all jobs share one sweep folder; a requeued Slurm
# job reruns the pickled job config, cache included, so it finds its folder again.
OmegaConf.register_new_resolver("lossbench.unique", unique_folder_name, use_cache=True, replace=True)
