"""The training-loss tracker shared by a single run and by members: divergence, step logging, epoch mean.

Every optimizer step hands its loss (a 0-d tensor, or ``(M,)`` for M members) to ``LossTracker.step``;
the tracker keeps it on the device and looks at the host only every ``check_every`` steps (one
``tolist()`` for the whole window: a host sync on a GPU, nearly free on a CPU). From that window it

* records each member's **first non-finite loss** exactly (step and value), however long the window;
* emits ``train/loss_step`` rows every ``log_every`` steps (the loss of that step, as Lightning logs it);
* sums the epoch's loss weighted by batch size, for ``train/loss_epoch`` (Lightning's ``on_epoch`` mean).

No ``self.log`` per step: Lightning's result collection costs more than a small model's whole step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class Divergence:
    member: int
    step: int
    loss: float

    def as_dict(self) -> dict[str, float]:
        return {"step": self.step, "loss": self.loss}


@dataclass
class LossTracker:
    members: int | None  # None: one model, losses are 0-d; else M, losses are (M,)
    check_every: int = 1
    log_every: int = 50
    diverged: dict[int, Divergence] = field(default_factory=dict)
    _window: list[tuple[int, int, torch.Tensor]] = field(default_factory=list)  # (step, batch size, loss)
    _epoch_sum: list[float] = field(default_factory=list)
    _epoch_weight: int = 0
    last: list[float] | None = None  # the newest losses seen on the host (for the progress bar)

    def __post_init__(self) -> None:
        self.check_every, self.log_every = max(1, int(self.check_every)), max(1, int(self.log_every))
        self._epoch_sum = [0.0] * (self.members or 1)

    def step(self, loss: torch.Tensor, global_step: int, batch_size: int) -> list[dict[str, float]] | None:
        """Record the loss of optimizer step ``global_step`` (0-based). Returns the rows to log (a list of
        ``{"step": s, "train/loss_step": value or [values]}``) when the window was looked at, else None."""
        self._window.append((global_step, batch_size, loss.detach()))
        if len(self._window) >= self.check_every:
            return self.flush()
        return None

    def flush(self) -> list[dict[str, float]]:
        """Look at the window now (also at every epoch end)."""
        if not self._window:
            return []
        if len(self._window) == 1:
            values = [self._window[0][2].float().tolist()]
        else:
            values = torch.stack([w[2] for w in self._window]).float().tolist()  # one host sync for the window
        rows = []
        for (step, batch_size, _), value in zip(self._window, values, strict=True):
            per_member = value if self.members else [value]
            for m, v in enumerate(per_member):
                if not math.isfinite(v) and m not in self.diverged:
                    self.diverged[m] = Divergence(m, step, v)
                if m not in self.diverged:
                    self._epoch_sum[m] += v * batch_size
            self._epoch_weight += batch_size
            self.last = per_member
            if (step + 1) % self.log_every == 0:
                rows.append({"step": step, "train/loss_step": value})
        self._window.clear()
        return rows

    def epoch_mean(self) -> list[float]:
        """Each member's loss over the epoch, weighted by batch size, then reset (flush first)."""
        weight = self._epoch_weight or 1
        means = [s / weight for s in self._epoch_sum]
        self._epoch_sum = [0.0] * (self.members or 1)
        self._epoch_weight = 0
        return means

    def state_dict(self) -> dict:
        return {"diverged": [(d.member, d.step, d.loss) for d in self.diverged.values()]}

    def load_state_dict(self, state: dict) -> None:
        self.diverged = {m: Divergence(m, s, v) for m, s, v in state.get("diverged", [])}
