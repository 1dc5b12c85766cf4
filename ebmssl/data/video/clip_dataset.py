"""Clips carried through the image pipeline: frames and actions packed as the planes of one uint8 tensor.

The trainer's sources index ``dataset.images`` (N, planes, H, W) and hand the rows to the view pipeline;
nothing in them knows about time. A :class:`ClipDataset` therefore stores clip n as ``frames * C + 1``
planes: the T frames' C channels in order, then one *action plane* whose first row holds the T - 1
actions (uint8, so K <= 256 and T - 1 <= W). ``clip_views`` (ebmssl/data/views/clips.py) unpacks them
(:func:`unpack`), crops in time and space, and hands the architecture the clip views and the actions.
The usual fields are also kept unpacked for the measurements: ``clips`` (N, T, C, H, W), ``actions``
(N, T - 1), ``positions``, ``velocities`` and the item images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ebmssl.data.dataset import DatasetInfo, ImageDataset


def pack(clips: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """uint8 (N, T * C + 1, H, W): the frames' planes then the action plane (actions in its first row)."""
    n, frames, channels, height, width = clips.shape
    if actions.shape != (n, frames - 1):
        raise ValueError(f"actions must be (N, T - 1) = ({n}, {frames - 1}), got {tuple(actions.shape)}")
    if frames - 1 > width or (actions.numel() and (actions.min() < 0 or actions.max() > 255)):
        raise ValueError(f"the action plane holds T - 1 <= W = {width} actions in 0..255")
    plane = torch.zeros(n, 1, height, width, dtype=torch.uint8)
    plane[:, 0, 0, : frames - 1] = actions.to(torch.uint8)
    return torch.cat([clips.reshape(n, frames * channels, height, width), plane], dim=1)


def unpack(packed: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of :func:`pack` on any device: clips (B, T, C, H, W) (packed's dtype) and actions (B, T - 1) int64."""
    batch, planes, height, width = packed.shape
    frames, rest = divmod(planes - 1, channels)
    if rest or frames < 1:
        raise ValueError(f"packed clips have {planes} planes: expected T * {channels} + 1 (frames then the action plane)")
    clips = packed[:, : frames * channels].reshape(batch, frames, channels, height, width)
    actions = packed[:, -1, 0, : frames - 1].to(torch.int64)
    return clips, actions


class ClipDataset(ImageDataset):
    """An :class:`ImageDataset` whose rows are packed clips (:func:`pack`); ``channels`` are a frame's.

    ``frames``, ``num_choices``; per clip ``actions`` (N, T - 1), ``positions`` (N, T, M, 2) top-left
    (y, x) of each item, ``velocities`` (N, T, 2) of the distractor, ``items`` (N, M, s, s) the item images
    (item 0 the agent, whose class is the label) and ``item_classes`` (N, M).
    """

    def __init__(
        self, clips: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor, num_classes: int, *,
        positions: torch.Tensor, velocities: torch.Tensor, items: torch.Tensor, item_classes: torch.Tensor,
        num_choices: int, speed: int, mean: Sequence[float], std: Sequence[float], name: str,
        classes: Sequence[str] | None = None,
    ) -> None:  # fmt: skip
        self.frames, self.frame_channels = int(clips.shape[1]), int(clips.shape[2])
        super().__init__(pack(clips, actions), targets, num_classes, mean, std, name, classes)
        self.actions = actions.to(torch.int64)
        self.positions, self.velocities = positions, velocities
        self.items, self.item_classes = items, item_classes
        self.num_choices, self.speed = int(num_choices), int(speed)

    @property
    def channels(self) -> int:
        return self.frame_channels

    @property
    def canvas(self) -> int:
        return int(self.images.shape[-1])

    @property
    def clips(self) -> torch.Tensor:
        """uint8 (N, T, C, H, W), a view of the packed tensor."""
        return unpack(self.images, self.frame_channels)[0]

    def info(self) -> DatasetInfo:
        return DatasetInfo(self.mean, self.std, self.channels, self.image_size, self.num_classes, self.name, True, len(self))

    def sample(self, index: int) -> dict[str, torch.Tensor | int]:
        """One clip: ``clip`` uint8 (T, C, H, W), ``label``, ``actions`` (T - 1,) int64, ``positions``, ``velocities``."""
        return {
            "clip": self.clips[index], "label": int(self.targets[index]), "actions": self.actions[index],
            "positions": self.positions[index], "velocities": self.velocities[index],
        }  # fmt: skip

    def select(self, indices: torch.Tensor, name: str | None = None) -> "ClipDataset":
        return ClipDataset(
            self.clips[indices], self.actions[indices], self.targets[indices], self.num_classes,
            positions=self.positions[indices], velocities=self.velocities[indices], items=self.items[indices],
            item_classes=self.item_classes[indices], num_choices=self.num_choices, speed=self.speed,
            mean=self.mean, std=self.std, name=name or self.name, classes=self.classes,
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"ClipDataset(name={self.name!r}, size={len(self)}, frames={self.frames}, channels={self.channels}, "
            f"canvas={self.canvas}, num_choices={self.num_choices}, num_classes={self.num_classes})"
        )
