"""Patch masks for masked image modelling, drawn from the batch's CPU generator.

Every sampler here is a pure function of its arguments and of the generator's state: the trainer hands
each micro-batch a generator seeded by (seed, step, micro, process) (``ebmssl.data.source.Batch``), so a
resumed run draws exactly the masks the uninterrupted run drew. Masks are int64 index tensors into the
row-major patch grid (index = row * grid_w + column), the form :meth:`ViTBackbone.tokens` takes.

* :func:`random_masking` is MAE's per-sample random masking (He et al. 2022, "Masked Autoencoders Are
  Scalable Vision Learners"; facebookresearch/mae ``models_mae.py: random_masking``): uniform noise
  per patch, argsort, keep the first ``round_down(L (1 - ratio))``.
* :func:`multi_block_masks` is I-JEPA's multi-block sampler (Assran et al. 2023, "Self-Supervised
  Learning from Images with a Joint-Embedding Predictive Architecture"; facebookresearch/ijepa
  ``src/masks/multiblock.py: MaskCollator``): one block size for the targets and one for the context
  are drawn per batch; per sample, ``num_targets`` target blocks (scale 0.15-0.2, aspect 0.75-1.5) and
  one context block (scale 0.85-1.0, aspect 1) from which every target patch is removed; each block
  keeps more than ``min_keep`` patches (as the official rejection loop, which relaxes the
  target-removal constraint one block at a time after 20 failed tries); all masks of one kind are cut
  to the shortest in the batch so they stack. Deviations: every draw comes from the given generator
  (the official code draws block positions from the global RNG), and a block's top-left corner ranges
  over every position that fits (``0 .. grid - size``; the official ``randint(0, grid - size)`` never
  places a block on the last row or column).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class RandomMasks:
    """MAE masks: ``keep`` (N, K) visible patches, ``masked`` (N, L - K) hidden ones, both sorted."""

    keep: torch.Tensor
    masked: torch.Tensor


@dataclass
class BlockMasks:
    """I-JEPA masks: ``context`` (N, Kc) patch indices and ``targets`` (M, N, Kt), one entry per target block."""

    context: torch.Tensor
    targets: torch.Tensor


def random_masking(generator: torch.Generator, batch: int, num_patches: int, ratio: float = 0.75) -> RandomMasks:
    """MAE random masking: keep ``int(L (1 - ratio))`` patches per sample, uniformly at random.

    As the official code: noise ~ U(0, 1) per patch, ``ids_shuffle = argsort(noise)``, the first
    ``len_keep`` are visible. Indices are returned sorted (the order of tokens is irrelevant to a
    transformer whose positions are added per token, and sorting makes the masks easy to compare).
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must lie in [0, 1), got {ratio}")
    len_keep = int(num_patches * (1 - ratio))
    if len_keep < 1:
        raise ValueError(f"mask ratio {ratio} leaves no visible patch out of {num_patches}")
    noise = torch.rand(batch, num_patches, generator=generator)
    order = torch.argsort(noise, dim=1)
    keep, _ = order[:, :len_keep].sort(dim=1)
    masked, _ = order[:, len_keep:].sort(dim=1)
    return RandomMasks(keep=keep, masked=masked)


def sample_block_size(
    generator: torch.Generator, grid_h: int, grid_w: int, scale: tuple[float, float], aspect_ratio: tuple[float, float]
) -> tuple[int, int]:
    """One (height, width) for a batch, as I-JEPA's ``_sample_block_size``.

    One uniform draw u sets both the scale s = s_min + u (s_max - s_min) and the aspect ratio
    a = a_min + u (a_max - a_min); area = int(H W s); h = round(sqrt(area a)), w = round(sqrt(area / a)),
    each shrunk until it is smaller than the grid side.
    """
    u = float(torch.rand(1, generator=generator))
    area = int(grid_h * grid_w * (scale[0] + u * (scale[1] - scale[0])))
    ratio = aspect_ratio[0] + u * (aspect_ratio[1] - aspect_ratio[0])
    h = int(round(math.sqrt(area * ratio)))
    w = int(round(math.sqrt(area / ratio)))
    while h >= grid_h:
        h -= 1
    while w >= grid_w:
        w -= 1
    return max(h, 1), max(w, 1)


def _block(generator: torch.Generator, grid_h: int, grid_w: int, h: int, w: int) -> torch.Tensor:
    top = int(torch.randint(0, grid_h - h + 1, (1,), generator=generator))
    left = int(torch.randint(0, grid_w - w + 1, (1,), generator=generator))
    mask = torch.zeros(grid_h, grid_w, dtype=torch.bool)
    mask[top : top + h, left : left + w] = True
    return mask


def _sample_block(
    generator: torch.Generator,
    grid_h: int,
    grid_w: int,
    size: tuple[int, int],
    min_keep: int,
    forbidden: list[torch.Tensor] | None = None,
    patience: int = 20,
) -> torch.Tensor:
    """A block with more than ``min_keep`` patches; ``forbidden`` masks are removed from it, the last
    ones released one at a time after every ``patience`` failures (the official ``constrain_mask``)."""
    tries = failures = 0
    while True:
        mask = _block(generator, grid_h, grid_w, *size)
        if forbidden:
            for region in forbidden[: max(len(forbidden) - tries, 0)]:
                mask &= ~region
        if int(mask.sum()) > min_keep:
            return mask
        failures += 1
        if failures == patience:
            failures = 0
            tries += 1
            if tries > (len(forbidden) if forbidden else 0) + 100:
                raise ValueError(
                    f"cannot place a {size[0]}x{size[1]} block with more than {min_keep} patches on a "
                    f"{grid_h}x{grid_w} grid; lower min_keep"
                )


def multi_block_masks(
    generator: torch.Generator,
    batch: int,
    grid_h: int,
    grid_w: int,
    num_targets: int = 4,
    target_scale: tuple[float, float] = (0.15, 0.2),
    target_aspect_ratio: tuple[float, float] = (0.75, 1.5),
    context_scale: tuple[float, float] = (0.85, 1.0),
    context_aspect_ratio: tuple[float, float] = (1.0, 1.0),
    min_keep: int = 10,
    allow_overlap: bool = False,
) -> BlockMasks:
    """I-JEPA multi-block masks for a batch (see the module docstring); a pure function of ``generator``."""
    if num_targets < 1:
        raise ValueError(f"num_targets must be at least 1, got {num_targets}")
    if min_keep >= grid_h * grid_w:
        raise ValueError(f"min_keep={min_keep} must be smaller than the {grid_h * grid_w} patches of the grid")
    target_size = sample_block_size(generator, grid_h, grid_w, target_scale, target_aspect_ratio)
    context_size = sample_block_size(generator, grid_h, grid_w, context_scale, context_aspect_ratio)
    # a target block never holds more patches than its rectangle; keep min_keep reachable
    target_keep = min(min_keep, target_size[0] * target_size[1] - 1)
    contexts, targets = [], []
    for _ in range(batch):
        blocks = [_sample_block(generator, grid_h, grid_w, target_size, target_keep) for _ in range(num_targets)]
        forbidden = None if allow_overlap else blocks
        context = _sample_block(generator, grid_h, grid_w, context_size, min_keep, forbidden)
        targets.append([torch.nonzero(b.flatten()).squeeze(1) for b in blocks])
        contexts.append(torch.nonzero(context.flatten()).squeeze(1))
    shortest_context = min(c.numel() for c in contexts)
    shortest_target = min(t.numel() for per_sample in targets for t in per_sample)
    context = torch.stack([c[:shortest_context] for c in contexts])
    target = torch.stack(
        [torch.stack([per_sample[m][:shortest_target] for per_sample in targets]) for m in range(num_targets)]
    )
    return BlockMasks(context=context, targets=target)


def gather_tokens(tokens: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``tokens`` (N, L, D) at ``indices`` (N, K): (N, K, D) (the official ``apply_masks`` for one mask)."""
    return torch.gather(tokens, 1, indices.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
