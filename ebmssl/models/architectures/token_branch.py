"""The pieces the token-feeding architectures share: a ViT branch with a mask token and heads, and the config
checks of ``model.masks`` and ``model.patch_head``.

A :class:`TokenBranch` is what an EMA target copies (:mod:`ebmssl.models.target`, the one EMA): the backbone
(a patch-token ViT, :meth:`ebmssl.models.backbones.vit.ViTBackbone.tokens`), the learned ``mask_token``
that replaces masked patch embeddings before the positions are added (BEiT / iBOT ``masked_embed``, SimMIM
``mask_token``; zero-initialised as iBOT's and DINOv2's), the class head and the patch head (None: the class
head is shared, iBOT's ``shared_head`` and DINOv2's ``separate_head: false``). Patch tokens go through a head
as rows (N T, E), so any registered head (batch norm included) applies to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ebmssl.models.masking import BlockMaskSpec
from ebmssl.registry import ConfigError

MASK_KEYS = ("ratio", "probability", "num_blocks", "min_patches", "aspect_ratio")
MASK_EXAMPLE = "`masks: {ratio: [0.1, 0.5], probability: 1.0}`"


class TokenBranch(nn.Module):
    """Backbone, mask token, class head and (optional) patch head; see the module docstring."""

    def __init__(self, backbone: nn.Module, head: nn.Module, patch_head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.patch_head = patch_head
        self.mask_token = nn.Parameter(torch.zeros(int(backbone.output_dim)))

    def encode(self, images: torch.Tensor, masked: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled features (N, E): the class token, or the mean patch token with ``pool: mean``; patch tokens
        (N, T, E)), the patches where ``masked`` (N, T) is True seen as the mask token."""
        cls, patches = self.backbone.tokens(images, masked=masked, mask_token=None if masked is None else self.mask_token)
        return self.backbone.pooled(cls, patches), patches

    def project_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """The patch head (or the shared class head) on every token: (N, T, E) -> (N, T, K)."""
        head = self.head if self.patch_head is None else self.patch_head
        n, t = patches.shape[:2]
        return head(patches.reshape(n * t, patches.shape[-1])).reshape(n, t, -1)

    @property
    def patch_dim(self) -> int:
        return int((self.head if self.patch_head is None else self.patch_head).output_dim)


def build_block_mask_spec(spec: Any, location: str, default_probability: float = 1.0) -> BlockMaskSpec:
    """``model.masks`` (``location``: where the ``model:`` section is) -> :class:`BlockMaskSpec`, a ConfigError
    naming the key on bad input."""
    from ebmssl.models.architectures._common import check_section

    where = f"{location}.masks"
    spec = {} if spec is None else spec
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping such as {MASK_EXAMPLE}, got {spec!r}.")
    check_section(spec, MASK_KEYS, location, "masks")
    values = dict(spec)
    try:
        for key in ("ratio", "aspect_ratio"):
            if key in values:
                pair = tuple(float(v) for v in values[key])
                if len(pair) != 2:
                    raise ValueError(f"{key} takes two numbers [low, high], got {values[key]!r}")
                values[key] = pair
        values.setdefault("probability", default_probability)
        return BlockMaskSpec(
            **{k: (float(v) if k == "probability" else int(v) if k in ("num_blocks", "min_patches") else v) for k, v in values.items()}
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}. Write e.g. {MASK_EXAMPLE}.") from error


def bind_token_width(objective: nn.Module, width: int) -> None:
    """Hand the patch terms that keep per-width state (iBOT's centre) the width of the patch head's output,
    so the state is sized before the first step (a compiled step then compiles once)."""
    for term in getattr(objective, "patch_terms", []):
        bind = getattr(term, "bind_token_width", None)
        if bind is not None:
            bind(int(width))
