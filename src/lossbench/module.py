"""The one LightningModule: model + head + loss + torchmetrics."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from lossbench.heads import get_head
from lossbench.losses import get_loss
from lossbench.metrics import build_metrics, metric_values, update_metrics
from lossbench.models import OPTIMIZERS, build_model
from lossbench.targets import prepare


class LossModule(L.LightningModule):
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
        self.divergence_check_every = divergence_check_every  # None: every step on CPU, every 50 on a GPU
        self.register_buffer("first_bad_step", torch.tensor(-1), persistent=False)
        self.register_buffer("first_bad_loss", torch.tensor(0.0), persistent=False)
        self.divergence: dict[str, float] | None = None

    # -- forward ---------------------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
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
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.compute_loss(self(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(y))
        self._watch_divergence(loss.detach())
        return loss

    def on_fit_start(self) -> None:
        if self.divergence_check_every is None:
            self.divergence_check_every = 1 if self.device.type == "cpu" else 50
        self.divergence_check_every = max(1, int(self.divergence_check_every))

    def _watch_divergence(self, loss: torch.Tensor) -> None:
        # Record the first non-finite loss on the device; look at it (a host sync) only every
        # ``divergence_check_every`` steps so GPU runs are not synchronised each step.
        step = self.global_step
        new_bad = (~torch.isfinite(loss)) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(new_bad, torch.full_like(self.first_bad_step, step), self.first_bad_step)
        self.first_bad_loss = torch.where(new_bad, loss.float(), self.first_bad_loss)
        if (step + 1) % self.divergence_check_every == 0:
            self.check_divergence()

    def check_divergence(self) -> bool:
        if self.divergence is None and int(self.first_bad_step) >= 0:
            self.divergence = {"step": int(self.first_bad_step), "loss": float(self.first_bad_loss)}
            self.trainer.should_stop = True
        return self.divergence is not None

    def on_train_epoch_end(self) -> None:
        self.check_divergence()

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

    def configure_optimizers(self):
        params = dict(self.hparams.optimizer)
        name = params.pop("name")
        return OPTIMIZERS[name](self.parameters(), **params)
