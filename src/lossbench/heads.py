"""Output heads: how a model's raw scores become probabilities and decisions.

A head owns three things, and only these, so that losses, metrics and prediction agree:

* ``extra_outputs`` -- how many raw outputs beyond the ``C`` class scores the model needs
  (the partition head needs one more, for the label count ``Z``);
* ``probabilities(raw, task)`` -- per-class probabilities in [0, 1] used by the metrics;
* ``decide(raw, task)`` -- the head's decision rule: class indices ``(N,)`` for single-label
  (multiclass) data, a 0/1 matrix ``(N, C)`` for multi-label data.

Heads:

``sigmoid``   independent per-class probabilities ``sigma(x_c)``; multi-label decision
              ``p_c > threshold`` (0.5 by default, i.e. logit > 0); single-label decision argmax.
``softmax``   one distribution ``softmax(x)``; single-label decision argmax; multi-label decision
              ``p_c > threshold``.
``partition`` the factorisation from the Cross Validated thread: a softmax distribution
              over the ``C`` classes plus a label count ``Z = max(0.01, z)`` (or ``softplus(z)``)
              from one extra output; ``y_c ~ Z * softmax(x)_c``. Multi-label decision: the top
              ``round(Z)`` classes. Probabilities for metrics: ``min(1, Z * softmax(x))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

TASKS = ("multiclass", "multilabel")
Z_ACTIVATIONS = ("clip", "softplus")
Z_FLOOR = 0.01  # the thread's max(0.01, output)


def label_count(z: torch.Tensor, activation: str = "clip") -> torch.Tensor:
    """The partition head's non-negative label count ``Z`` from its raw extra output."""
    if activation == "clip":
        return z.clamp_min(Z_FLOOR)
    if activation == "softplus":
        return F.softplus(z)
    raise ValueError(f"z_activation must be one of {Z_ACTIVATIONS}, got {activation!r}")


@dataclass(frozen=True)
class Head:
    name: str
    threshold: float = 0.5
    z_activation: str = "clip"

    @property
    def extra_outputs(self) -> int:
        return 1 if self.name == "partition" else 0

    def class_scores(self, raw: torch.Tensor) -> torch.Tensor:
        """The ``C`` class logits (drops the partition head's count output)."""
        return raw[:, :-1] if self.extra_outputs else raw

    def count(self, raw: torch.Tensor) -> torch.Tensor:
        """Predicted number of labels per sample ``(N,)`` (partition head only)."""
        return label_count(raw[:, -1], self.z_activation)

    def probabilities(self, raw: torch.Tensor, task: str) -> torch.Tensor:
        scores = self.class_scores(raw)
        if self.name == "sigmoid":
            p = torch.sigmoid(scores)
            # Single-label metrics (NLL, calibration) need one distribution: renormalise.
            return p / p.sum(dim=1, keepdim=True).clamp_min(1e-12) if task == "multiclass" else p
        dist = torch.softmax(scores, dim=1)
        if self.name == "softmax" or task == "multiclass":
            return dist
        return (self.count(raw).unsqueeze(1) * dist).clamp_max(1.0)

    def decide(self, raw: torch.Tensor, task: str) -> torch.Tensor:
        scores = self.class_scores(raw)
        if task == "multiclass":
            return scores.argmax(dim=1)
        if self.name == "partition":
            return top_k_mask(scores, self.count(raw).round().long())
        return (self.probabilities(raw, task) > self.threshold).long()


def top_k_mask(scores: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
    """0/1 matrix marking each row's ``k`` highest scores (``k`` per row or one for all)."""
    num_classes = scores.shape[1]
    k = torch.as_tensor(k, device=scores.device).clamp(0, num_classes).expand(scores.shape[0])
    rank = scores.argsort(dim=1, descending=True).argsort(dim=1)
    return (rank < k.unsqueeze(1)).long()


HEADS = ("sigmoid", "softmax", "partition")


def get_head(name: str, threshold: float = 0.5, z_activation: str = "clip") -> Head:
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; available: {', '.join(HEADS)}")
    return Head(name=name, threshold=threshold, z_activation=z_activation)
