"""The LightningModules: ``LossModule`` (one model + head + loss + torchmetrics) and the training step both
it and ``lossbench.members.MemberModule`` share (``SteppedModule``).

Both step their optimizer themselves (Lightning's manual optimization): one forward, one backward, gradient
clipping, one ``optimizer.step()`` and the schedule, with no per-step ``self.log``. Lightning's automatic loop
(closure, result collection, per-step logging) costs more per step than a small model's whole step on a
CPU; the losses go to ``lossbench.tracking.LossTracker``, which looks at them every few steps.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from lossbench.heads import get_head
from lossbench.losses import get_loss
from lossbench.metrics import build_metrics, metric_values, update_metrics
from lossbench.models import OPTIMIZERS, build_model
from lossbench.resume import restore_rng, rng_state
from lossbench.targets import prepare
from lossbench.tracking import LossTracker

SCHEDULERS = ("none", "cosine", "onecycle")
CLIP_ALGORITHMS = ("norm", "value")


def build_scheduler(optimizer: torch.optim.Optimizer, params: dict[str, Any] | None, total_steps):
    """A per-step learning-rate schedule over ``total_steps()`` optimizer steps (None: constant rate).

    ``cosine``: ``lr_t = lr * (1 + cos(pi * t / T)) / 2`` after ``warmup_steps`` of linear warm-up
    (``torch.optim.lr_scheduler.CosineAnnealingLR`` / ``LinearLR``); ``onecycle``: Smith & Topin (2017),
    ``torch.optim.lr_scheduler.OneCycleLR`` with ``max_lr`` = the optimizer's rate and ``pct_start``.
    """
    params = dict(params or {"name": "none"})
    name = params.pop("name", "none")
    if name == "none":
        return None
    from torch.optim import lr_scheduler

    total_steps = max(1, int(total_steps()))
    if name == "cosine":
        warmup = int(params.get("warmup_steps", 0))
        cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup),
                                                eta_min=float(params.get("min_lr", 0.0)))
        if not warmup:
            return cosine
        ramp = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
        return lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
    if name == "onecycle":
        lrs = [group["lr"] for group in optimizer.param_groups]
        return lr_scheduler.OneCycleLR(optimizer, max_lr=lrs, total_steps=total_steps,
                                       pct_start=float(params.get("pct_start", 0.3)),
                                       cycle_momentum=bool(params.get("cycle_momentum", False)))
    raise ValueError(f"scheduler={name!r} is unknown; available: {', '.join(SCHEDULERS)}")


class SteppedModule(L.LightningModule):
    """What a single run and a member stack share: the optimizer step, the schedule, the loss tracker and
    the ``train/loss_step`` / ``train/loss_epoch`` rows (written to the loggers by ``log_rows``)."""

    members: int | None = None  # None: one model

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.tracker: LossTracker | None = None

    # -- the parts every subclass provides ----------------------------------------------------------
    def optimizer_params(self):
        return self.parameters()

    def on_divergence(self, divergences) -> None:
        """Called with the newly found ``lossbench.tracking.Divergence`` records."""

    def log_rows(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            step = row.pop("step")
            for logger in self.loggers:
                logger.log_metrics({**row, "epoch": self.current_epoch}, step=step)

    # -- the step ---------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        check_every = self.hparams.get("divergence_check_every")
        if check_every is None:  # a look is a host sync on an accelerator; nearly free on a CPU
            check_every = 1 if self.device.type == "cpu" else 50
        self.tracker = LossTracker(self.members, check_every=check_every, log_every=self.trainer.log_every_n_steps)
        if self._tracker_state is not None:  # resumed: the divergences found before the checkpoint
            self.tracker.load_state_dict(self._tracker_state)
        self._clip = self.hparams.get("gradient_clip_val")
        self._clip_algorithm = self.hparams.get("gradient_clip_algorithm") or "norm"
        self._has_scheduler = bool(self.trainer.lr_scheduler_configs)

    _tracker_state: dict | None = None

    def optimize(self, loss: torch.Tensor) -> None:
        """Backward, clip, step, schedule: what Lightning's automatic loop does, without its per-step cost."""
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self._clip:
            self.clip(optimizer, float(self._clip), self._clip_algorithm)
        optimizer.step()
        if self._has_scheduler:
            self.lr_schedulers().step()

    def clip(self, optimizer, value: float, algorithm: str) -> None:
        self.clip_gradients(optimizer, gradient_clip_val=value, gradient_clip_algorithm=algorithm)

    def track(self, losses: torch.Tensor, batch_size: int) -> None:
        rows = self.tracker.step(losses, self.global_step - 1, batch_size)
        if rows is not None:
            self._after_flush(rows)

    def _after_flush(self, rows: list[dict[str, Any]]) -> None:
        known = set(getattr(self, "_reported", set()))
        new = [d for m, d in self.tracker.diverged.items() if m not in known]
        self._reported = known | {d.member for d in new}
        if new:
            self.on_divergence(new)
        if rows:
            self.log_rows(rows)

    def on_train_epoch_end(self) -> None:
        self._after_flush(self.tracker.flush())
        means = self.tracker.epoch_mean()
        self.log_epoch_loss(means)

    def log_epoch_loss(self, means: list[float]) -> None:
        self.log_rows([{"step": self.global_step - 1, "train/loss_epoch": means[0]}])

    # -- optimizer and schedule ---------------------------------------------------------------------
    def configure_optimizers(self):
        params = dict(self.hparams.optimizer)
        optimizer = OPTIMIZERS[params.pop("name")](self.optimizer_params(), **params)
        scheduler = build_scheduler(optimizer, self.hparams.get("scheduler"),
                                    lambda: self.trainer.estimated_stepping_batches)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints: the tracker's divergences and the RNG state travel with the weights ------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lossbench_tracker"] = self.tracker.state_dict() if self.tracker else {}
        checkpoint["lossbench_rng"] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._tracker_state = checkpoint.get("lossbench_tracker")
        if "lossbench_rng" in checkpoint:
            restore_rng(checkpoint["lossbench_rng"])

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets ``_current_fx_name`` around each of the dozen hook calls of every step; it is never a
        # parameter, buffer or submodule, so nn.Module's bookkeeping (a few microseconds each time) is skipped
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class LossModule(SteppedModule):
    """Trains ``model`` with ``loss`` through ``head`` and logs val/test metrics.

    All arguments are plain dicts/values so the checkpoint's hyperparameters rebuild the module
    (``LossModule.load_from_checkpoint``) without the Hydra config.
    """

    def __init__(
        self,
        task: str,
        num_classes: int,
        input_shape: list[int],
        model: dict[str, Any],
        head: dict[str, Any],
        loss: dict[str, Any],
        optimizer: dict[str, Any],
        normalization: dict[str, Any] | None = None,
        divergence_check_every: int | None = None,
        scheduler: dict[str, Any] | None = None,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.task, self.num_classes = task, num_classes
        self.head = get_head(**head)
        model = dict(model)
        self.net = build_model(model.pop("name"), input_shape, num_classes + self.head.extra_outputs, **model)
        loss = dict(loss)
        loss_name = loss.pop("name")
        if loss_name == "partition_softmax":
            loss.setdefault("z_activation", self.head.z_activation)
        self.criterion = get_loss(loss_name, head=self.head.name, **loss)
        norm = normalization or {"scale": 1.0, "mean": [0.0], "std": [1.0]}
        shape = (1, -1) + (1,) * (len(input_shape) - 1)
        self.input_scale = float(norm["scale"])
        self.register_buffer("input_mean", torch.tensor(norm["mean"]).view(shape), persistent=False)
        self.register_buffer("input_std", torch.tensor(norm["std"]).view(shape), persistent=False)
        self.val_metrics = nn.ModuleDict(build_metrics(task, num_classes))
        self.test_metrics = nn.ModuleDict(build_metrics(task, num_classes))
        self.divergence: dict[str, float] | None = None

    # -- forward ---------------------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.input_mean.dtype)
        if self.input_scale != 1.0:
            x = x / self.input_scale
        return (x - self.input_mean) / self.input_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw scores: ``C`` class logits (+ the partition head's count output)."""
        return self.net(self.normalize(x))

    def compute_loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = prepare(y, self.criterion.target_form, self.num_classes)
        if target.is_floating_point():
            target = target.to(raw.dtype)  # e.g. float64 runs: keep the loss in one precision
        return self.criterion(raw, target)

    # -- steps -----------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        loss = self.compute_loss(self(x), y)
        self.optimize(loss)
        self.track(loss, len(y))

    def on_divergence(self, divergences) -> None:
        first = divergences[0]
        self.divergence = {"step": first.step, "loss": first.loss}
        self.trainer.should_stop = True

    def check_divergence(self) -> bool:
        """Look at the steps not yet looked at (after fit); True when the run diverged."""
        if self.tracker is not None:
            self._after_flush(self.tracker.flush())
        return self.divergence is not None

    def _eval_step(self, batch, metrics: nn.ModuleDict, stage: str) -> None:
        x, y = batch
        raw = self(x)
        self.log(f"{stage}/loss", self.compute_loss(raw, y), on_epoch=True, batch_size=len(y), sync_dist=True)
        update_metrics(metrics, self.task, self.head.probabilities(raw, self.task),
                       self.head.decide(raw, self.task), self.head.decide(raw, "multilabel"), y)

    def _log_metrics(self, metrics: nn.ModuleDict, stage: str) -> None:
        # compute() already gathers every rank's state; sync_dist only marks the values as global
        self.log_dict(metric_values(metrics, stage), sync_dist=True)
        for m in metrics.values():
            m.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics, "test")
