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

from lossbench.config import TRAINER_KEYS_OWN, error_line, redact_secrets, validate, validate_values
from lossbench.decisions import evaluate_decision_rules
from lossbench.errors import ConfigError, UserError
from lossbench.loggers import build_loggers, finish_loggers
from lossbench.summary import finite_or_none, git_commit, versions, write_summary

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")
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
            divergence_check_every=cfg.trainer.get("divergence_check_every"),
        )
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err).splitlines()[0]) from None


def build_trainer(cfg: DictConfig, run_dir: Path, loggers: list, extra_callbacks: list | None = None):
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, TQDMProgressBar

    from lossbench.resume import RNGState, atomic_checkpoint_io

    params = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items()
              if k not in TRAINER_KEYS_OWN and v is not None}
    params.setdefault("plugins", [atomic_checkpoint_io()])  # a kill never leaves half a checkpoint
    callbacks = [*(extra_callbacks or []), RNGState()]
    bar = cfg.trainer.get("progress_bar", "rich")
    if bar == "rich":
        callbacks.append(RichProgressBar(leave=True))
    elif bar == "tqdm":
        callbacks.append(TQDMProgressBar())
    if cfg.trainer.get("checkpoint", True):
        # one file, replaced (atomically) after every epoch; save_last with save_top_k=0 would only
        # write it when training ends, leaving nothing to resume from after a kill
        callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1,
                                          every_n_epochs=1, save_on_train_epoch_end=True,
                                          enable_version_counter=False))
    try:
        return L.Trainer(
            default_root_dir=str(run_dir), logger=loggers, callbacks=callbacks,
            enable_progress_bar=bar != "none", enable_checkpointing=bool(cfg.trainer.get("checkpoint", True)),
            enable_model_summary=False, use_distributed_sampler=False, **params,
        )
    except (MisconfigurationException, ValueError, TypeError, ImportError) as err:  # e.g. accelerator=gpu, no GPU
        raise ConfigError(f"trainer: {str(err).splitlines()[0]}") from None


def print_results(summary: dict[str, Any], run_dir: Path) -> None:
    from lightning.pytorch.utilities import rank_zero_only
    from rich.console import Console
    from rich.table import Table

    if rank_zero_only.rank != 0:  # DDP: one table, from rank 0
        return
    console = Console()
    table = Table(title=f"{summary['config']['run_name']} -- {summary['status']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in summary["metrics"].items():
        table.add_row(name, "nan" if value is None else f"{value:.4f}")
    if summary["metrics"]:
        console.print(table)
    if summary.get("divergence"):
        console.print(f"{summary['config']['run_name']} -- diverged: non-finite training loss "
                      f"{summary['divergence']['loss']} at step {summary['divergence']['step']}; no test metrics")
    console.print(f"run directory: {run_dir}")


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
    trainer = build_trainer(cfg, run_dir, loggers)
    # weights-only loading: a checkpoint is data, never code
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from, weights_only=True)
    module.check_divergence()
    metrics: dict[str, Any] = {}
    if module.divergence is None:
        results = trainer.test(module, datamodule=dm, verbose=False)
        metrics = {k: finite_or_none(v) for k, v in results[0].items()}
        metrics.update(evaluate_decision_rules(cfg, trainer, module, dm, run_dir))
    summary = run_summary(cfg, dm.task, metrics, trainer.current_epoch, trainer.global_step,
                          time.perf_counter() - start, run_dir, module.divergence)
    if resume_from is not None:
        summary["resumed_from"] = str(resume_from)
    if trainer.is_global_zero:
        write_summary(run_dir, summary)
    finish_loggers(loggers, summary)  # W&B: final summary, run closed before the next sweep job
    return summary


def run_summary(cfg: DictConfig, task: str, metrics: dict[str, Any], epochs: int, global_step: int,
                wall_time_s: float, run_dir: Path, divergence: dict[str, float] | None) -> dict[str, Any]:
    """The ``summary.json`` of a trained run (``train()`` and each vectorised member write the same)."""
    summary = {
        "status": "diverged" if divergence else "completed",
        "config": redact_secrets(OmegaConf.to_container(cfg, resolve=True)),
        "task": task,
        "metrics": metrics,
        "epochs": epochs,
        "global_step": global_step,
        "wall_time_s": round(wall_time_s, 3),
        "run_dir": str(run_dir),
        "versions": versions(),
        "git_commit": git_commit(),
    }
    if divergence:
        # the loss as text ("nan", "inf"): JSON has no non-finite numbers
        summary["divergence"] = {"step": divergence["step"], "loss": str(divergence["loss"])}
    return summary


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def failure_summary(cfg: DictConfig, run_dir: Path, status: str, error: BaseException) -> dict[str, Any]:
    return {
        "status": status,
        "config": redact_secrets(OmegaConf.to_container(cfg, resolve=False)),
        "metrics": {},
        "error": redact_secrets(f"{type(error).__name__}: {error}".splitlines()[0]),
        "run_dir": str(run_dir),
        "versions": versions(),
        "git_commit": git_commit(),
    }


def checkpoint_to_resume(cfg: DictConfig) -> Path | None:
    """Follow ``resume`` (auto/true/false/path; lossbench.resume) and say which checkpoint is used."""
    from lossbench.resume import checkpoint_info, find_checkpoint

    checkpoint = find_checkpoint(cfg)
    if checkpoint is not None:
        info = checkpoint_info(checkpoint)
        log.info("resuming from %s (%d epochs, %d steps done); resume=false starts over",
                 checkpoint, info["epochs"], info["global_step"])
    return checkpoint


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def run(cfg: DictConfig) -> None:
    """The Hydra task: one job of a run or a sweep."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.get("print_config"):
        print(OmegaConf.to_yaml(redact_secrets(OmegaConf.to_container(cfg, resolve=True))))
    try:
        validate_values(cfg)  # before looking for checkpoints or reading data
        if cfg.get("seeds") is not None or cfg.get("losses") is not None:
            from lossbench.vectorised import train_members  # several members in one pass

            for summary in train_members(cfg, run_dir):
                print_results(summary, Path(summary["run_dir"]))
            return
        summary = train(cfg, run_dir, resume_from=checkpoint_to_resume(cfg))
    except UserError as err:
        if not is_multirun():
            exit_with_error_line(err)
        # one bad combination in a sweep's product is skipped with its reason; the sweep goes on
        write_summary(run_dir, failure_summary(cfg, run_dir, "skipped", err))
        log.warning("skipped %s: %s", run_dir.name, err)
        return
    except Exception as err:
        # a crash is recorded (with its traceback in the job's log), then re-raised: Hydra's launcher
        # finishes the other jobs of a sweep first, then raises the first failure
        write_summary(run_dir, failure_summary(cfg, run_dir, "failed", err))
        if is_multirun():
            log.exception("failed %s", run_dir.name)
        raise
    print_results(summary, run_dir)


# the user's HYDRA_FULL_ERROR, read before main() sets it for Hydra
_user_full_error = os.environ.get("HYDRA_FULL_ERROR")


def exit_with_error_line(err: BaseException) -> None:
    """Bad input: ``error: <one line>`` on stderr, exit code 2; the traceback under HYDRA_FULL_ERROR=1."""
    if _user_full_error == "1":
        raise err
    print(f"error: {error_line(err)}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    """``lossbench-train`` / ``python -m lossbench.train``: bad input (lossbench's or Hydra's: unknown
    option, unknown key, unparsable override) ends with one line ``error: ...`` on stderr and exit
    code 2, no traceback unless ``HYDRA_FULL_ERROR=1``. Crashes keep their traceback (exit code 1)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    global _user_full_error
    _user_full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises its errors instead of printing several lines
    try:
        run()
    except (UserError, HydraException, OmegaConfBaseException) as err:
        exit_with_error_line(err)
    finally:
        if _user_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = _user_full_error


if __name__ == "__main__":
    main()
