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
