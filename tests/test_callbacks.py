"""The rich progress bar lossbench uses: cheap per step, and complete at the end of every epoch."""

from __future__ import annotations

import time

from lossbench.build import build_datamodule, build_module, build_trainer
from lossbench.callbacks import StepProgressBar

from conftest import compose_config


class RecordingBar(StepProgressBar):
    """Counts rich's ``Progress.update`` calls and keeps the count shown when each training epoch ends."""

    def __init__(self) -> None:
        super().__init__(refresh_per_second=1)  # the count moves at most twice a second
        self.updates, self.shown_at_epoch_end = 0, []

    def move_counter(self) -> None:
        self.updates += 1
        super().move_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self.shown_at_epoch_end.append(int(self.progress.tasks[self.train_progress_bar_id].completed))


def test_bar_moves_at_most_a_few_times_a_second_and_ends_each_epoch_complete(tmp_path, monkeypatch):
    cfg = compose_config(["data=synthetic", "data.train_size=4096", "data.val_size=64", "data.test_size=64",
                          "data.batch_size=8", "model.hidden=[8]", "trainer.max_epochs=2",
                          "trainer.limit_val_batches=0", "trainer.checkpoint=false"])
    dm = build_datamodule(cfg)
    monkeypatch.setattr("lossbench.callbacks.StepProgressBar", RecordingBar)  # the bar build_trainer adds
    trainer = build_trainer(cfg, tmp_path, [], dm=dm)
    [bar] = [c for c in trainer.callbacks if isinstance(c, RecordingBar)]
    start = time.monotonic()
    trainer.fit(build_module(cfg, dm), datamodule=dm)
    seconds = time.monotonic() - start
    batches_per_epoch = 4096 // 8
    assert bar.shown_at_epoch_end == [batches_per_epoch, batches_per_epoch]
    # twice a second at most, plus the end of each epoch; a counter moved every step would be 1,024 updates
    assert bar.updates <= seconds / bar.count_every_s + 2 * 2 + 1 < 2 * batches_per_epoch, (bar.updates, seconds)
