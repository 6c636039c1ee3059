"""Loggers of a run. CSV is always written (``<run dir>/metrics.csv``)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    from lightning.pytorch.loggers import CSVLogger

    return [CSVLogger(save_dir=str(run_dir), name="", version="")]
