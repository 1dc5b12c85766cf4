"""The trainer's online linear probe: linear accuracy tracked during self-supervised training.

``loss = sum_i v_i CE(W sg(h_i) + b, y_i) / max(1, sum_i v_i)`` with ``v_i = [y_i >= 0]``: ``sg`` (the
features arrive detached) means the probe's loss trains only the probe, so adding it to the SSL loss
leaves the encoder's update unchanged (as the online evaluation heads of solo-learn, lightly and the
BYOL/SimCLR code bases). Unlabeled rows (label -1, e.g. STL-10's unlabeled split) are masked out of the
loss and the accuracy on the device (no ``nonzero``, no host read); a batch with no labeled row gives a
zero loss, never a NaN.

The probe's ``nn.Linear`` is registered on the learner as ``learner.probe`` (so the optimiser, DDP and the
checkpoint carry it as any other parameter) but no architecture calls it: :class:`OnlineProbe` runs after
the learner's forward on ``LearnerOutput.features`` (outside a compiled region). ``model.online_probe: false``
turns it off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ProbeResult:
    loss: torch.Tensor  # masked mean cross-entropy over the labeled rows (0 without any)
    accuracy: torch.Tensor  # top-1 accuracy over the labeled rows (0 without any)


class OnlineProbe(nn.Module):
    """A linear classifier on detached features; :meth:`forward` masks unlabeled rows (label < 0)."""

    def __init__(self, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.linear = nn.Linear(feature_dim, num_classes)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> ProbeResult:
        with torch.autocast(device_type=features.device.type, enabled=False):
            logits = self.linear(features.detach().float().flatten(1))
        labels = labels.to(logits.device).long()
        labeled = labels >= 0
        weight = labeled.to(logits.dtype)
        count = weight.sum().clamp_min(1.0)
        losses = F.cross_entropy(logits, labels.clamp_min(0), reduction="none")
        correct = (logits.detach().argmax(dim=1) == labels).to(logits.dtype)
        return ProbeResult(loss=(losses * weight).sum() / count, accuracy=(correct * weight).sum() / count)


def build_online_probe(model_config: Mapping[str, Any] | None, feature_dim: int, num_classes: int | None) -> OnlineProbe | None:
    """The probe for ``model.online_probe`` (default true) when the training set has classes, else None."""
    enabled = (model_config or {}).get("online_probe", True)
    return OnlineProbe(int(feature_dim), int(num_classes)) if enabled and num_classes else None


def attach_online_probe(learner: nn.Module, model_config: Mapping[str, Any] | None, num_classes: int | None) -> None:
    """Register the probe on ``learner`` as ``learner.probe`` (None when off), sized by its encoder's output."""
    learner.probe = build_online_probe(model_config, learner.encoder.output_dim, num_classes)
