"""The one validation step, and the validity table of (task, head, loss).

``validate(cfg, task)`` checks names, ranges and the combination before anything is built or
trained, raising ``ConfigError`` with a one-line message that names the key,
the bad value and what is allowed.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lossbench import data, decisions, losses, noise
from lossbench.errors import ConfigError
from lossbench.heads import HEADS, TASKS, Z_ACTIVATIONS
from lossbench.models import MODELS, OPTIMIZERS
from lossbench.module import SCHEDULERS


def is_valid(task: str, head: str, loss: str) -> bool:
    cls = losses.loss_class(loss)
    return head in cls.heads and task in cls.tasks


def natural_head(loss: str) -> str:
    return losses.loss_class(loss).heads[0]


def validity_table() -> list[dict[str, Any]]:
    """Every (task, head, loss) with whether lossbench trains it."""
    return [
        {"task": task, "head": head, "loss": loss, "valid": is_valid(task, head, loss)}
        for task in TASKS for loss in losses.available() for head in HEADS
    ]


def check_combination(task: str, head: str, loss: str) -> None:
    cls = losses.loss_class(loss)
    if head not in cls.heads:
        raise ConfigError(f"head={head} is not valid for loss={loss}; valid heads for {loss}: {', '.join(cls.heads)}")
    if task not in cls.tasks:
        raise ConfigError(f"loss={loss} does not support {task} data; it supports: {', '.join(cls.tasks)}")


# a training loss must be one number: loss.reduction=none (per-element losses) is for lossbench.losses users
TRAINING_REDUCTIONS = tuple(r for r in losses.REDUCTIONS if r != "none")


# (key, test, what is allowed) -- checked only where the key is present
RANGES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("seed", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    ("optimizer.lr", lambda v: _is_num(v) and v > 0, "a number > 0"),
    ("optimizer.weight_decay", lambda v: _is_num(v) and v >= 0, "a number >= 0"),
    ("optimizer.momentum", lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("data.batch_size", lambda v: _is_int(v) and v > 0, "an integer > 0"),
    # a count, or (data=image_folder, image_csv, arrays) a fraction of the training examples
    ("data.val_size", lambda v: _is_int(v) and v > 0 or _is_fraction(v), "an integer > 0 or a fraction in (0, 1)"),
    ("data.train_size", lambda v: v is None or (_is_int(v) and v > 0), "null or an integer > 0"),
    ("data.test_size", lambda v: v is None or (_is_int(v) and v > 0) or _is_fraction(v),
     "null, an integer > 0 or a fraction in (0, 1)"),
    ("data.num_classes", lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
    ("trainer.max_epochs", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("trainer.gradient_clip_val", lambda v: v is None or (_is_num(v) and v > 0), "null or a number > 0"),
    ("trainer.gradient_clip_algorithm", lambda v: v in (None, "norm", "value"), "null, norm or value"),
    ("trainer.accumulate_grad_batches", lambda v: v in (None, 1),
     "1 (lossbench steps the optimizer once per batch; raise data.batch_size instead)"),
    ("trainer.divergence_check_every", lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
    ("trainer.log_every_n_steps", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("scheduler.name", lambda v: v in SCHEDULERS, f"one of {', '.join(SCHEDULERS)}"),
    ("scheduler.warmup_steps", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    ("scheduler.pct_start", lambda v: _is_num(v) and 0 < v < 1, "a number in the open interval (0, 1)"),
    ("scheduler.min_lr", lambda v: _is_num(v) and v >= 0, "a number >= 0"),
    ("head.threshold", lambda v: _is_num(v) and 0 < v < 1, "a number in the open interval (0, 1)"),
    ("head.z_activation", lambda v: v in Z_ACTIVATIONS, f"one of {', '.join(Z_ACTIVATIONS)}"),
    ("loss.label_smoothing", lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("loss.eps", lambda v: _is_num(v) and v >= 0, "a number >= 0"),
    ("loss.reduction", lambda v: v in TRAINING_REDUCTIONS,
     f"one of {', '.join(TRAINING_REDUCTIONS)} (none gives one loss per element: nothing to train on)"),
    ("model.dropout", lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("model.channels", lambda v: _is_int_list(v, minimum=1) and len(v) > 0, "a non-empty list of integers >= 1"),
    ("data.num_features", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("data.cardinality", lambda v: _is_num(v) and v > 0, "a number > 0 (and <= data.num_classes)"),
    ("data.imbalance", lambda v: _is_num(v) and v >= 0, "a number >= 0 (0: balanced)"),
    ("data.noise", lambda v: _is_num(v) and v >= 0, "a number >= 0"),
    ("data.problem_seed", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    ("members_forward", lambda v: v in ("auto", "vmap", "loop"), "auto, vmap or loop"),
    ("seeds", lambda v: v is None or _is_seed_list(v), "null or a non-empty list of distinct integers >= 0"),
    ("resume", lambda v: v in (True, False, "auto") or (isinstance(v, str) and v.strip() != ""),
     "auto (continue an unfinished run of the same config if there is one), true (must continue one), "
     "false, or the path of a run directory or .ckpt file"),
]


def _is_int_list(v: Any, minimum: int) -> bool:
    items = list(v) if OmegaConf.is_list(v) or isinstance(v, (list, tuple)) else None
    return items is not None and all(_is_int(i) and i >= minimum for i in items)


def _check_multilabel(cfg: DictConfig) -> None:
    """``data.multilabel``: true or false; image_csv also takes auto (multi-label when a row has two labels)."""
    value = OmegaConf.select(cfg, "data.multilabel", default="<absent>")
    if isinstance(value, str) and value == "<absent>":
        return
    with_auto = cfg.data.name == "image_csv"
    if not (isinstance(value, bool) or (with_auto and value == "auto")):
        allowed = "auto, true or false" if with_auto else "true or false"
        raise ConfigError(f"data.multilabel={value!r} is invalid for data={cfg.data.name}; allowed: {allowed}")


def _check_model_hidden(cfg: DictConfig) -> None:
    """``model.hidden``: the MLP's hidden widths (a list), the CNN's fully connected width (one integer)."""
    hidden = OmegaConf.select(cfg, "model.hidden", default="<absent>")
    if (isinstance(hidden, str) and hidden == "<absent>") or cfg.model.name not in ("mlp", "cnn"):
        return  # timm / custom models take their own arguments
    mlp = cfg.model.name == "mlp"
    ok = _is_int_list(hidden, minimum=1) if mlp else _is_int(hidden) and hidden >= 1
    if not ok:
        shown = OmegaConf.to_container(hidden) if OmegaConf.is_config(hidden) else hidden
        allowed = "a list of integers >= 1 (the hidden widths; [] for none)" if mlp else "an integer >= 1"
        raise ConfigError(f"model.hidden={shown!r} is invalid for model={cfg.model.name}; allowed: {allowed}")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_fraction(v: Any) -> bool:
    return _is_num(v) and not _is_int(v) and 0 < v < 1


def _is_seed_list(v: Any) -> bool:
    seeds = list(v) if OmegaConf.is_list(v) or isinstance(v, (list, tuple)) else None
    return bool(seeds) and all(_is_int(s) and s >= 0 for s in seeds) and len(set(seeds)) == len(seeds)


def _name(cfg: DictConfig, group: str, allowed: list[str] | tuple[str, ...]) -> str:
    name = OmegaConf.select(cfg, f"{group}.name")
    if name not in allowed:
        raise ConfigError(f"{group}={name!r} is unknown; available: {', '.join(allowed)}")
    return name


def validate_names(cfg: DictConfig) -> None:
    _name(cfg, "data", data.available())
    _name(cfg, "head", HEADS)
    _name(cfg, "loss", losses.available())
    _name(cfg, "model", MODELS)
    _name(cfg, "optimizer", OPTIMIZERS)


def validate_values(cfg: DictConfig) -> None:
    """Everything that does not need the data: names, ranges, keys passed to Lightning and torch."""
    validate_names(cfg)
    for key, ok, allowed in RANGES:
        value = OmegaConf.select(cfg, key, default="<absent>")
        if not (isinstance(value, str) and value == "<absent>") and not ok(value):
            shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            raise ConfigError(f"{key}={shown!r} is invalid; allowed: {allowed}")
    _check_model_hidden(cfg)
    _check_multilabel(cfg)
    validate_passed_keys(cfg)
    noise.check_config(cfg.get("noise"))


def validate(cfg: DictConfig, task: str) -> None:
    """Names, ranges, passed-on keys, then the (task, head, loss) combination and decision rules."""
    validate_values(cfg)
    check_combination(task, cfg.head.name, cfg.loss.name)
    decisions.check_config(cfg.get("decision"), cfg.head.name)
    noise.check_task(OmegaConf.select(cfg, "noise.name", default="none"), task)


# -- keys passed on to Lightning and torch ------------------------------------------------------------
# trainer.* keys that are lossbench's own, not Trainer arguments (read by build.build_trainer / the module):
# lossbench steps the optimizer itself (lossbench.module), so it also clips the gradients itself
TRAINER_KEYS_OWN = ("progress_bar", "checkpoint", "divergence_check_every", "gradient_clip_val",
                    "gradient_clip_algorithm")
# Trainer arguments train.build_trainer sets itself; a trainer.* key must not repeat them
TRAINER_ARGS_SET_BY_LOSSBENCH = ("default_root_dir", "logger", "callbacks", "enable_progress_bar",
                                 "enable_checkpointing", "enable_model_summary", "use_distributed_sampler")


def validate_passed_keys(cfg: DictConfig) -> None:
    """Every ``trainer.*`` key is a Trainer argument (or lossbench's own); every ``optimizer.*`` key
    is an argument of the chosen torch optimizer -- so a typo fails here, not mid-fit."""
    import inspect

    import lightning as L
    import torch

    trainer_args = set(inspect.signature(L.Trainer.__init__).parameters) - {"self", *TRAINER_ARGS_SET_BY_LOSSBENCH}
    allowed = sorted(trainer_args | set(TRAINER_KEYS_OWN))
    for key in cfg.get("trainer") or {}:
        if key not in allowed:
            raise ConfigError(f"trainer.{key} is not a Trainer argument lossbench passes on; allowed: {', '.join(allowed)}")
    accelerator = OmegaConf.select(cfg, "trainer.accelerator")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} but no CUDA GPU is visible here; allowed on this "
                          "machine: auto, cpu (or trainer=cpu)")
    name = cfg.optimizer.name
    allowed = sorted(set(inspect.signature(OPTIMIZERS[name]).parameters) - {"params"})
    for key in cfg.optimizer:
        if key != "name" and key not in allowed:
            raise ConfigError(f"optimizer.{key} is not an argument of optimizer={name}; allowed: {', '.join(allowed)}")
