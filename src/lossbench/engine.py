"""Train and test one configuration with Lightning: validate -> build -> ``Trainer.fit`` / ``test`` ->
decision rules -> ``summary.json``. Used by the CLI (``lossbench.train``), the reproduction and the
benchmark."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lossbench.build import build_datamodule, build_module, build_trainer
from lossbench.config import validate
from lossbench.decisions import evaluate_decision_rules
from lossbench.loggers import build_loggers, finish_loggers
from lossbench.summary import finite_or_none, run_summary, write_summary

log = logging.getLogger("lossbench")


def drop_nvml_cuda_check() -> None:
    """``import lightning`` sets PYTORCH_NVML_BASED_CUDA_CHECK=1 (CUDA checks that do not poison forks); with
    no GPU every optimizer step then spends ~47 us in ``torch.cuda.is_available()``. No GPU: nothing to protect."""
    import torch

    if not torch.cuda.is_available():
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def train(cfg: DictConfig, run_dir: Path, resume_from: Path | None = None) -> dict[str, Any]:
    """Train and test one configuration; return its summary (also written to ``run_dir``).

    ``resume_from``: a ``last.ckpt`` to continue from (``lossbench.resume.find_checkpoint``).
    """
    import lightning as L

    drop_nvml_cuda_check()
    start = time.perf_counter()
    dm = build_datamodule(cfg)
    validate(cfg, dm.task)
    dm.setup("fit")  # read the data now, so bad files fail before any training
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build_module(cfg, dm)
    loggers = build_loggers(cfg, run_dir)
    trainer = build_trainer(cfg, run_dir, loggers, dm=dm)
    # weights-only loading: a checkpoint is data, never code
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from, weights_only=True)
    module.check_divergence()
    metrics: dict[str, Any] = {}
    if module.divergence is None:
        results = trainer.test(module, datamodule=dm, verbose=False)
        metrics = {k: finite_or_none(v) for k, v in results[0].items()}
        metrics.update(evaluate_decision_rules(cfg, trainer, module, dm, run_dir))
    summary = run_summary(cfg, dm.task, metrics, trainer.current_epoch, trainer.global_step,
                          time.perf_counter() - start, run_dir, module.divergence, classes=dm.classes,
                          noise=dm.noise_record)
    if resume_from is not None:
        summary["resumed_from"] = str(resume_from)
    if trainer.is_global_zero:
        write_summary(run_dir, summary)
    finish_loggers(loggers, summary)  # W&B: final summary, run closed before the next sweep job
    return summary


def checkpoint_to_resume(cfg: DictConfig, claim=None) -> Path | None:
    """Follow ``resume`` (auto/true/false/path; lossbench.resume) and say which checkpoint is used;
    ``claim``: see ``lossbench.resume.find_checkpoint``."""
    from lossbench.resume import checkpoint_info, find_checkpoint

    checkpoint = find_checkpoint(cfg, claim)
    if checkpoint is not None:
        info = checkpoint_info(checkpoint)
        log.info("resuming from %s (%d epochs, %d steps done); resume=false starts over",
                 checkpoint, info["epochs"], info["global_step"])
    return checkpoint
