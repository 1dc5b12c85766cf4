"""Patch-token masking of chosen views on the online branch (``model.mask_views``).

Masked Siamese Networks (Assran et al. 2022, "Masked Siamese Networks for Label-Efficient Learning";
facebookresearch/msn ``src/deit.py: forward_features``) encode the anchor views with a random subset of
their patch tokens while the target branch sees the whole image. This module is that input corruption,
written for any joint-embedding method::

    model:
      mask_views: {ratio: 0.15, views: global, skip: [0], per_sample: true}

* ``ratio``: the fraction of patch tokens dropped; a masked view keeps ``floor(L (1 - ratio))`` of its
  ``L`` patches (the official ``T_H = floor(L * patch_keep)``, and MAE's ``len_keep``), at least one.
* ``views``: which views are masked: ``all``, ``global`` (the first ``num_global``), ``local`` (the
  rest), or a list of view indices; ``skip``: indices never masked (e.g. ``[0]``, a view whose online
  features feed the probe or whose online embedding is the target). Default: every view, none skipped.
* ``per_sample``: one random subset per sample (MAE's per-sample masking, default) or one subset per
  view shared by all its samples (the official MSN draws one ``randperm`` per forward).

Masks are drawn as :func:`ebmssl.models.masking.random_masking` draws them (uniform noise per patch,
argsort, the first K) from the batch's device generator (seeded by seed, step, micro-batch and process),
view by view in index order, so a resumed or multi-process run draws the masks an uninterrupted single
run draws. Only the online branch is masked: an EMA target encodes full views, and a target taken from
the online branch (``online``, ``stop_gradient``) is re-encoded from the full global views when one of
them is masked (one more online pass of the global views). The backbone must encode a subset of patch tokens: it offers
``grid(height, width)`` (its patch grid) and ``forward(x, keep)`` with ``keep`` (N, K) patch indices
(:class:`ebmssl.models.backbones.vit.ViTBackbone`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ebmssl.registry import ConfigError

MASK_VIEWS_KEYS = ("ratio", "views", "skip", "per_sample")
VIEW_SETS = ("all", "global", "local")
EXAMPLE = "`mask_views: {ratio: 0.15, views: global, skip: [0]}`"


def supports_token_masking(backbone: nn.Module) -> bool:
    """Whether ``backbone`` has a patch grid (``grid(h, w)``) and encodes a kept subset (``forward(x, keep)``)."""
    if not callable(getattr(backbone, "grid", None)):
        return False
    try:
        return "keep" in inspect.signature(backbone.forward).parameters
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class ViewMasking:
    """Which views of a step the online branch encodes with a random subset of patch tokens, and how many."""

    ratio: float
    views: str | tuple[int, ...] = "all"
    skip: tuple[int, ...] = ()
    per_sample: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"ratio must lie in [0, 1), got {self.ratio}")
        if isinstance(self.views, str) and self.views not in VIEW_SETS:
            raise ValueError(f"views must be one of {', '.join(VIEW_SETS)} or a list of view indices, got {self.views!r}")
        for index in (() if isinstance(self.views, str) else self.views) + self.skip:
            if index < 0:
                raise ValueError(f"view indices must be non-negative, got {index}")

    def masked_views(self, num_views: int, num_global: int) -> list[int]:
        """Indices of the masked views among ``num_views`` (the first ``num_global`` are the global views)."""
        if self.views == "all":
            chosen = range(num_views)
        elif self.views == "global":
            chosen = range(min(num_global, num_views))
        elif self.views == "local":
            chosen = range(num_global, num_views)
        else:
            missing = [i for i in self.views if i >= num_views]  # type: ignore[union-attr]
            if missing:
                raise ValueError(f"mask_views.views names view(s) {missing}, but the step has {num_views} views (0-{num_views - 1})")
            chosen = list(self.views)  # type: ignore[arg-type]
        return sorted(set(chosen) - set(self.skip))

    def kept(self, num_patches: int) -> int:
        """Patches a masked view of ``num_patches`` keeps: floor(L (1 - ratio)), at least one."""
        return max(int(num_patches * (1.0 - self.ratio)), 1)

    def draw(
        self, generator: torch.Generator, views: Sequence[torch.Tensor], num_global: int, backbone: nn.Module
    ) -> list[torch.Tensor | None]:
        """Per view: (N, K) sorted kept patch indices on the view's device, or None for an unmasked view.

        A pure function of the generator's state and the views' shapes; views are drawn in index order.
        """
        keeps: list[torch.Tensor | None] = [None] * len(views)
        for index in self.masked_views(len(views), num_global):
            view = views[index]
            grid_h, grid_w = backbone.grid(view.shape[-2], view.shape[-1])
            num_patches = int(grid_h * grid_w)
            rows = view.shape[0] if self.per_sample else 1
            # random_masking's draw (uniform noise, argsort, the first K), with K at least one
            order = torch.argsort(torch.rand(rows, num_patches, generator=generator, device=generator.device), dim=1)
            keep, _ = order[:, : self.kept(num_patches)].sort(dim=1)
            keeps[index] = keep.expand(view.shape[0], -1).to(view.device)
        return keeps


def build_view_masking(spec: Any, backbone: nn.Module, where: str = "model.mask_views") -> ViewMasking | None:
    """``model.mask_views`` (a mapping, or null for none), checked against the backbone."""
    from ebmssl.schema import check_keys

    if spec is None or spec is False:
        return None
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping such as {EXAMPLE}, or null; got {spec!r}.")
    source, _, section = where.rpartition(": ")
    check_keys(spec, MASK_VIEWS_KEYS, f"{section or where}.", source or "<config>")
    if "ratio" not in spec:
        raise ConfigError(f"{where}: no `ratio:` (the fraction of patch tokens dropped). Write e.g. {EXAMPLE}.")
    if not supports_token_masking(backbone):
        raise ConfigError(
            f"{where}: the backbone ({type(backbone).__name__}) cannot encode a subset of its patch tokens, "
            f"which masking views needs (it must offer `grid(h, w)` and `forward(x, keep)`). Use a ViT backbone, "
            f"e.g. `backbone: {{name: vit, variant: vit_tiny, image_size: 28, patch_size: 4}}`, or remove `mask_views:`."
        )
    views = spec.get("views", "all")
    skip = spec.get("skip") or []
    try:
        if not isinstance(views, str):
            views = tuple(int(i) for i in views)
        masking = ViewMasking(
            ratio=float(spec["ratio"]),
            views=views,
            skip=tuple(int(i) for i in skip),
            per_sample=bool(spec.get("per_sample", True)),
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}. Write e.g. {EXAMPLE}.") from error
    return masking
