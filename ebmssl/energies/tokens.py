"""Token sets and the interface of patch-level terms (docs/design.md, "Energies over token sets").

An image-level energy compares one vector per image per view; a patch-level term compares sets of
tokens. The architecture hands the objective, beside the per-view (N, D) embeddings, a :class:`TokenSets`:

* ``online[v]`` (N, T, D): the online branch's tokens of view v after its patch head (iBOT / DINOv2
  prototype scores, VICRegL / DenseCL local projections, SimMIM pixel predictions);
* ``target[v]`` (N, T, D): the target branch's tokens of view v (the EMA teacher's, or the pixels that
  SimMIM regresses); the architecture detaches them when its target branch has no gradient;
* ``masks[v]`` (N, T) bool, optional: True where online view v's token was replaced by the mask token;
* ``online_positions[v]`` / ``target_positions[v]`` (N, T, 2), optional: each token's centre in the
  coordinates of the original image (VICRegL's location matching);
* ``online_features[v]`` / ``target_features[v]`` (N, T, E), optional: backbone tokens before the heads
  (DenseCL matches by them), or (N, E) pooled backbone features (DINOv2's KoLeo on class tokens);
* ``num_images``, optional: set when ``online``/``target``/``masks`` hold selected rows and tokens only
  (``model.patch_tokens: masked``: the masked images' masked-token slots, :func:`ebmssl.models.masking.
  masked_token_slots`); the number of images per view the rows were selected from, so that a mean over
  images still divides by every image (an unmasked image counts 0, as in the full layout).

Masks are used as weights, never to select rows: a term's shapes never depend on how many tokens are
masked, so a step has no host read and compiles once (static mask lengths keep T fixed).

A term whose value depends on the masked tokens only, summed with the same per-image weight in every view
(``masked_tokens_suffice``), gives the same loss on the selected layout (whose rows mix views) as on the
full one; the architecture refuses ``patch_tokens: masked`` with any other term.

A :class:`PatchTerm` returns a scalar ``loss(tokens)``; ``update(tokens)`` (no gradient, training mode
only, after the loss) moves its state (centres, queues); ``family`` is the collapse family it
contributes to the collapse guard (None: it prevents nothing by itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from ebmssl.registry import PATCH_TERMS

register_patch_term = PATCH_TERMS.register


@dataclass(frozen=True)
class TokenSets:
    """Per-view token tensors of one batch (see the module docstring for each field)."""

    online: list[torch.Tensor]
    target: list[torch.Tensor]
    masks: list[torch.Tensor] | None = None
    online_positions: list[torch.Tensor] | None = None
    target_positions: list[torch.Tensor] | None = None
    online_features: list[torch.Tensor] | None = None
    target_features: list[torch.Tensor] | None = None
    num_images: int | None = None

    def require(self, field: str, term: str) -> list[torch.Tensor]:
        value = getattr(self, field)
        if not value:
            raise ValueError(f"patch term {term!r} needs `{field}` on the token sets; the architecture must provide it")
        return value


def mean_over_images(per_image: torch.Tensor, num_images: int | None) -> torch.Tensor:
    """Mean of per-image values (N',) over ``num_images`` images (None: over the N' rows themselves); the
    images left out of a selected layout had no masked token and count 0."""
    return per_image.mean() if num_images is None else per_image.sum() / num_images


def per_image_masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum_t m_nt v_nt / max(sum_t m_nt, 1)`` for values and a mask (N, T): (N,). An image with no
    masked token gives 0 (and still counts in a mean over images), as iBOT's and DINOv2's ``clamp(min=1)``."""
    weights = mask.to(values.dtype)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def reduce_views(values: Sequence[torch.Tensor], reduction: Literal["mean", "sum"]) -> torch.Tensor:
    """Sum or mean of per-view scalars (a running sum: no stack)."""
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total if reduction == "sum" or len(values) == 1 else total / len(values)


def check_reduction(reduction: str, key: str = "view_reduction") -> None:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"{key} must be 'mean' or 'sum', got {reduction!r}")


class PatchTerm(nn.Module):
    """Base class of patch-level terms (module docstring). ``example_config`` builds it in property tests;
    ``example_tokens`` says which optional fields its property tests must fill."""

    family: ClassVar[str | None] = None
    example_config: ClassVar[dict] = {}
    example_tokens: ClassVar[tuple[str, ...]] = ()
    collapse_sensitive: ClassVar[bool] = False  # True: a collapsed batch must score worse (property test)

    @property
    def masked_tokens_suffice(self) -> bool:
        """True when the loss and the update read the masked tokens only (and pooled features): then
        ``model.patch_tokens: masked`` hands it the selected layout and the value is unchanged."""
        return False

    def loss(self, tokens: TokenSets) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def update(self, tokens: TokenSets) -> None:
        return None

    def set_progress(self, progress) -> None:  # noqa: ANN001 - strategies.base.Progress
        return None

    def forward(self, tokens: TokenSets) -> torch.Tensor:
        return self.loss(tokens)
