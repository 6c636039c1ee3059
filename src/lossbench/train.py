"""Entry point: ``python -m lossbench.train [hydra overrides]``.

config -> validate -> build (data, module, trainer) -> fit -> test -> ``summary.json``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lossbench.config import validate
from lossbench.decisions import evaluate_decision_rules
from lossbench.errors import ConfigError, UserError
from lossbench.loggers import build_loggers, finish_loggers
from lossbench.summary import finite_or_none, git_commit, versions, write_summary

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")
TRAINER_KEYS_OWN = ("progress_bar", "checkpoint", "divergence_check_every")
log = logging.getLogger("lossbench")


def build_datamodule(cfg: DictConfig):
    from lossbench.data import build_datamodule as build

    params = OmegaConf.to_container(cfg.data, resolve=True)
    name = params.pop("name")
    try:
        return build(name, seed=cfg.seed, **params)
    except TypeError as err:  # an unknown data.* key
        raise ConfigError(f"data={name}: {err}") from None


def build_module(cfg: DictConfig, dm):
    from lossbench.module import LossModule

    def plain(node):
        return OmegaConf.to_container(node, resolve=True)

    try:
        return LossModule(
            task=dm.task, num_classes=dm.num_classes, input_shape=list(dm.input_shape),
            model=plain(cfg.model), head=plain(cfg.head), loss=plain(cfg.loss), optimizer=plain(cfg.optimizer),
            normalization=vars(dm.normalization),
            divergence_check_every=cfg.trainer.get("divergence_check_every", 1),
        )
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err).splitlines()[0]) from None


def build_trainer(cfg: DictConfig, run_dir: Path, loggers: list, extra_callbacks: list | None = None):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, TQDMProgressBar

    params = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items()
              if k not in TRAINER_KEYS_OWN and v is not None}
    callbacks = list(extra_callbacks or [])
    bar = cfg.trainer.get("progress_bar", "rich")
    if bar == "rich":
        callbacks.append(RichProgressBar(leave=True))
    elif bar == "tqdm":
        callbacks.append(TQDMProgressBar())
    if cfg.trainer.get("checkpoint", True):
        callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0,
                                          every_n_epochs=1, save_on_train_epoch_end=True))
    return L.Trainer(
        default_root_dir=str(run_dir), logger=loggers, callbacks=callbacks,
        enable_progress_bar=bar != "none", enable_checkpointing=bool(cfg.trainer.get("checkpoint", True)),
        enable_model_summary=False, use_distributed_sampler=False, **params,
    )


def print_results(summary: dict[str, Any], run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{summary['config']['run_name']} -- {summary['status']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in summary["metrics"].items():
        table.add_row(name, "nan" if value is None else f"{value:.4f}")
    console.print(table)
    console.print(f"run directory: {run_dir}")


def drop_nvml_cuda_check() -> None:
    """``import lightning`` sets PYTORCH_NVML_BASED_CUDA_CHECK=1 (CUDA checks that do not poison forks); with
    no GPU every optimizer step then spends ~47 us in ``torch.cuda.is_available()``. No GPU: nothing to protect."""
    import torch

    if not torch.cuda.is_available():
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train and test one configuration; return its summary (also written to ``run_dir``)."""
    import lightning as L

    drop_nvml_cuda_check()
    start = time.perf_counter()
    dm = build_datamodule(cfg)
    validate(cfg, dm.task)
    dm.setup("fit")  # read the data now, so bad files fail before any training
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build_module(cfg, dm)
    loggers = build_loggers(cfg, run_dir)
    trainer = build_trainer(cfg, run_dir, loggers)
    trainer.fit(module, datamodule=dm)
    module.check_divergence()
    metrics: dict[str, Any] = {}
    if module.divergence is None:
        results = trainer.test(module, datamodule=dm, verbose=False)
        metrics = {k: finite_or_none(v) for k, v in results[0].items()}
        metrics.update(evaluate_decision_rules(cfg, trainer, module, dm, run_dir))
    summary = {
        "status": "diverged" if module.divergence else "completed",
        "config": OmegaConf.to_container(cfg, resolve=True),
        "task": dm.task,
        "metrics": metrics,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_time_s": round(time.perf_counter() - start, 3),
        "run_dir": str(run_dir),
        "versions": versions(),
        "git_commit": git_commit(),
    }
    if module.divergence:
        summary["divergence"] = module.divergence
    if trainer.is_global_zero:
        write_summary(run_dir, summary)
    finish_loggers(loggers, summary)  # W&B: final summary, run closed before the next sweep job
    return summary


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def failure_summary(cfg: DictConfig, run_dir: Path, status: str, error: BaseException) -> dict[str, Any]:
    return {
        "status": status,
        "config": OmegaConf.to_container(cfg, resolve=False),
        "metrics": {},
        "error": f"{type(error).__name__}: {error}".splitlines()[0],
        "run_dir": str(run_dir),
        "versions": versions(),
        "git_commit": git_commit(),
    }


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.get("print_config"):
        print(OmegaConf.to_yaml(cfg, resolve=True))
    try:
        if cfg.get("seeds") is not None or cfg.get("losses") is not None:
            from lossbench.vectorised import train_members  # several members in one pass

            for summary in train_members(cfg, run_dir):
                print_results(summary, Path(summary["run_dir"]))
            return
        summary = train(cfg, run_dir)
    except UserError as err:
        if is_multirun():
            # one bad combination in a sweep's product is skipped with its reason; the sweep goes on
            write_summary(run_dir, failure_summary(cfg, run_dir, "skipped", err))
            log.warning("skipped %s: %s", run_dir.name, err)
            return
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        # a crash is recorded, then re-raised: Hydra finishes the other jobs of a sweep first
        write_summary(run_dir, failure_summary(cfg, run_dir, "failed", err))
        raise
    print_results(summary, run_dir)


if __name__ == "__main__":
    main()
