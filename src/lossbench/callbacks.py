"""Lightning callbacks of every lossbench run: the epoch checkpoint and a progress bar that costs microseconds
a step (the RNG state for resuming is in ``lossbench.resume``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Checkpoint, RichProgressBar


class EpochCheckpoint(Checkpoint):
    """Replaces ``<run dir>/checkpoints/last.ckpt`` after every training epoch (atomically: see
    ``lossbench.resume.atomic_checkpoint_io``). A ``Checkpoint`` subclass, so Lightning calls it after the
    module's own ``on_train_epoch_end`` and the checkpoint holds everything the epoch recorded. No per-step
    work (Lightning's ``ModelCheckpoint`` checks its step and time triggers after every batch)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            trainer.save_checkpoint(self.path, weights_only=False)  # everything resuming needs


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar, redrawn by rich's own thread a few times a second. Per step it only moves
    the counter; the metrics beside it (the newest training loss, the last validation metrics) are refreshed
    every ``metrics_every_s`` seconds. Lightning's own bar redraws after every batch (about 0.8 ms a step)."""

    def __init__(self, refresh_per_second: int = 4, metrics_every_s: float = 0.5) -> None:
        super().__init__(refresh_rate=refresh_per_second, leave=True)
        self.metrics_every_s = metrics_every_s
        self.count_every_s = 0.5 / refresh_per_second  # twice per redraw: the shown count is never stale
        self._metrics_at = self._count_at = 0.0
        self._batches_done = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._batches_done = batch_idx + 1
        now = time.monotonic()
        if now - self._count_at < self.count_every_s or self.is_disabled or self.progress is None:
            return  # rich's update takes a lock and records a speed sample: not worth it every step
        self._count_at = now
        self.move_counter()
        if now - self._metrics_at >= self.metrics_every_s:
            self._metrics_at = now
            self._update_metrics(trainer, pl_module)

    def move_counter(self) -> None:
        """Show the batches done so far (a subclass may count these calls)."""
        if self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self.progress.update(self.train_progress_bar_id, completed=self._batches_done)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.is_disabled and self.progress is not None:
            self.move_counter()  # the last steps of the epoch, skipped above
        super().on_train_epoch_end(trainer, pl_module)

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        tracker = getattr(pl_module, "tracker", None)
        if tracker is not None and tracker.last is not None:
            last = [v for m, v in enumerate(tracker.last) if m not in tracker.diverged]
            if last:
                metrics["loss"] = f"{sum(last) / len(last):.4g}" + (" (mean of members)" if len(tracker.last) > 1 else "")
            if tracker.diverged:
                metrics["diverged"] = len(tracker.diverged)
        return metrics
