"""Builders of a run's parts from its validated config, used by single runs, members, the reproduction
and the benchmark alike: the DataModule, the LightningModule and the Trainer."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lossbench.config import TRAINER_KEYS_OWN
from lossbench.errors import ConfigError
from lossbench.noise import Noise


def build_datamodule(cfg: DictConfig):
    from lossbench.data import build_datamodule as build

    params = OmegaConf.to_container(cfg.data, resolve=True)
    name = params.pop("name")
    try:
        dm = build(name, seed=cfg.seed, **params)
    except TypeError as err:  # an unknown data.* key
        raise ConfigError(f"data={name}: {err}") from None
    dm.noise = Noise.from_config(cfg.get("noise"), dataset=name)  # applied to the training split in dm.setup()
    return dm


def module_arguments(cfg: DictConfig, dm) -> dict:
    """The ``LossModule`` arguments of a config: plain values, so a checkpoint rebuilds the module alone."""

    def plain(node):
        return OmegaConf.to_container(node, resolve=True)

    trainer = cfg.trainer
    return dict(
        task=dm.task, num_classes=dm.num_classes, input_shape=list(dm.input_shape),
        model=plain(cfg.model), head=plain(cfg.head), loss=plain(cfg.loss), optimizer=plain(cfg.optimizer),
        normalization=vars(dm.normalization), divergence_check_every=trainer.get("divergence_check_every"),
        scheduler=plain(cfg.scheduler) if cfg.get("scheduler") is not None else None,
        gradient_clip_val=trainer.get("gradient_clip_val"), gradient_clip_algorithm=trainer.get("gradient_clip_algorithm"),
    )


def build_module(cfg: DictConfig, dm):
    from lossbench.module import LossModule

    try:
        return LossModule(**module_arguments(cfg, dm))
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err).splitlines()[0]) from None


def train_batches_per_epoch(cfg: DictConfig, dm) -> int:
    """Optimizer steps in one epoch: the training split's batches, after ``trainer.limit_train_batches``."""
    batches = -(-len(dm.splits["train"].y) // dm.batch_size)
    limit = cfg.trainer.get("limit_train_batches")
    if limit is None:
        return batches
    return int(batches * limit) if isinstance(limit, float) else min(int(limit), batches)


def build_trainer(cfg: DictConfig, run_dir: Path, loggers: list, extra_callbacks: list | None = None, dm=None):
    """The Lightning Trainer of a run: lossbench's callbacks (the epoch checkpoint, a light progress bar), atomic
    checkpoint writes, and the ``trainer.*`` keys that are Trainer arguments. Every callback costs a few
    microseconds at each of the five hooks of every step, so there are no more than these."""
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.callbacks import TQDMProgressBar

    from lossbench.callbacks import EpochCheckpoint, StepProgressBar
    from lossbench.paths import CHECKPOINT
    from lossbench.resume import atomic_checkpoint_io

    quiet_lightning()
    params = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items()
              if k not in TRAINER_KEYS_OWN and v is not None}
    params.setdefault("plugins", [atomic_checkpoint_io()])  # a kill never leaves half a checkpoint
    if dm is not None and dm.splits is not None:
        # the logging interval follows a short epoch (Lightning warns when it is longer than one)
        params["log_every_n_steps"] = max(1, min(int(params.get("log_every_n_steps", 50)),
                                                 train_batches_per_epoch(cfg, dm) or 1))
    callbacks = list(extra_callbacks or [])
    bar = cfg.trainer.get("progress_bar", "rich")
    if bar == "rich":
        callbacks.append(StepProgressBar())
    elif bar == "tqdm":
        callbacks.append(TQDMProgressBar(refresh_rate=20))
    if cfg.trainer.get("checkpoint", True):
        callbacks.append(EpochCheckpoint(run_dir / CHECKPOINT))
    try:
        return L.Trainer(
            default_root_dir=str(run_dir), logger=loggers if loggers else False, callbacks=callbacks,
            # with EpochCheckpoint among the callbacks Lightning adds no ModelCheckpoint of its own
            enable_progress_bar=bar != "none", enable_checkpointing=bool(cfg.trainer.get("checkpoint", True)),
            enable_model_summary=False, use_distributed_sampler=False, **params,
        )
    except (MisconfigurationException, ValueError, TypeError, ImportError) as err:  # e.g. accelerator=gpu, no GPU
        raise ConfigError(f"trainer: {str(err).splitlines()[0]}") from None


# Lightning's messages that say nothing about a lossbench run: the accelerator inventory (lossbench picks the
# device itself), the litlogger advertisement, the `srun` hint on machines with Slurm installed (lossbench
# runs one process unless trainer=ddp), and torch's LeafSpec deprecation raised inside Lightning's own code.
_QUIET_INFO = ("GPU available:", "TPU available:", "HPU available:", "💡 Tip: For seamless cloud logging",
               "`Trainer.fit` stopped: `max_epochs=", "Loading `train_dataloader` to estimate number of stepping")
_QUIET_WARNINGS = (r"The `srun` command is available on your system but is not used",
                   r".*isinstance\(treespec, LeafSpec\)` is deprecated")


class _DropInfo:
    def filter(self, record) -> bool:
        return not str(record.getMessage()).startswith(_QUIET_INFO)


def quiet_lightning() -> None:
    import logging
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropInfo) for f in logger.filters):
            logger.addFilter(_DropInfo())
    for message in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
