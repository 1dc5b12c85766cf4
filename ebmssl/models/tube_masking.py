"""V-JEPA tube masks on the (depth, rows, columns) tubelet grid, drawn on the device of the batch's generator.

V-JEPA (Bardes et al. 2024, "Revisiting Feature Prediction for Learning Visual Representations from Video";
facebookresearch/jepa ``src/masks/multiblock3d.py: _MaskGenerator``) masks tubes of the (depth, rows, columns)
tubelet grid (time-major indices): per batch one block size (t, h, w) is drawn, per clip ``num_blocks`` blocks
are placed uniformly and their union is predicted, the rest is the context. Official configs (short range:
8 blocks of spatial scale 0.15; long range: 2 blocks of 0.7; temporal scale 1.0: a 2-D block repeated over all
time) are two such masks per batch. Deviation: the official cuts every mask to the shortest of its batch; here
the lengths are a pure function of the config (:func:`tube_mask_lengths`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ebmssl.models.masking import MaskLengths


@dataclass
class TubeMasks:
    """V-JEPA masks of one mask configuration: ``context`` (N, Kc) visible tubelets, ``targets`` (N, Kt) predicted
    ones, disjoint, sorted, on the time-major tubelet grid."""

    context: torch.Tensor
    targets: torch.Tensor


def _tube_shape(u: torch.Tensor, depth: int, rows: int, cols: int, temporal_scale, spatial_scale, aspect_ratio):
    """V-JEPA's ``_sample_block_size`` for uniform draws ``u`` (..., 3) (float64): t = max(1, int(depth s_t)),
    area = int(rows cols s), a the aspect ratio, h = round(sqrt(area a)) <= rows, w = round(sqrt(area / a)) <= cols
    (at least 1: a deviation only on grids too small for the scale)."""
    t = torch.floor(depth * (temporal_scale[0] + u[..., 0] * (temporal_scale[1] - temporal_scale[0]))).clamp(1, depth)
    area = torch.floor(rows * cols * (spatial_scale[0] + u[..., 1] * (spatial_scale[1] - spatial_scale[0])))
    ratio = aspect_ratio[0] + u[..., 2] * (aspect_ratio[1] - aspect_ratio[0])
    h = torch.round(torch.sqrt(area * ratio)).clamp(1, rows)
    w = torch.round(torch.sqrt(area / ratio)).clamp(1, cols)
    return t.long(), h.long(), w.long()


def _tube_unions(generator, shape, depth, rows, cols, num_blocks, t, h, w, context_frames) -> torch.Tensor:
    """Boolean (*shape, depth * rows * cols): the union of ``num_blocks`` t x h x w blocks at uniform corners
    (every position that fits, the official ``randint(0, size - extent + 1)``), plus every step from
    ``context_frames`` on (the official ``max_temporal_keep``). ``t, h, w`` broadcast against ``shape``."""
    device = generator.device
    corner = torch.rand((*shape, num_blocks, 3), generator=generator, device=device, dtype=torch.float64)
    extent = [x.to(device).unsqueeze(-1) for x in (t, h, w)]
    sizes = (depth, rows, cols)
    starts = [torch.floor(corner[..., k] * (sizes[k] - x + 1)).long().unsqueeze(-1) for k, x in enumerate(extent)]
    index = torch.arange(depth * rows * cols, device=device)
    where = (index // (rows * cols), index // cols % rows, index % cols)
    inside = [(p >= s) & (p < s + x.unsqueeze(-1)) for p, s, x in zip(where, starts, extent)]
    union = (inside[0] & inside[1] & inside[2]).any(dim=-2)
    return union | (where[0] >= context_frames) if context_frames < depth else union


def _filled_first(mask: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` first row-major indices where ``mask`` (..., L) holds, topped up (when it holds fewer) from
    the end of the rest, sorted: the target and the context cut this way stay disjoint whenever their counts add
    up to at most L. A sort with a static shape (no ``nonzero``, no host read)."""
    length = mask.shape[-1]
    index = torch.arange(length, device=mask.device)
    keys = torch.where(mask, index, 2 * length - index)  # distinct: the argsort is the index order
    return keys.argsort(dim=-1)[..., :count].sort(dim=-1).values


TUBE_REFERENCE_SAMPLES = 2048  # clips drawn (seed 0, on the CPU) to fix the mask lengths of a configuration
TUBE_LENGTH_QUANTILE = 1 / 25  # the expected shortest of the official batch of 24 clips per GPU


@functools.lru_cache(maxsize=64)
def tube_mask_lengths(
    depth: int, rows: int, cols: int, num_blocks: int = 8, spatial_scale=(0.15, 0.15), temporal_scale=(1.0, 1.0),
    aspect_ratio=(0.75, 1.5), max_temporal_keep: float = 1.0, max_keep: int | None = None,
) -> MaskLengths:  # fmt: skip
    """The fixed lengths of :func:`tube_masks`, a pure function of the config: the official cut keeps, per batch
    of 24 clips, the fewest predicted and visible tubelets of the batch; here ``target`` is the 1/25 quantile of
    the union's size and ``context`` that of the complement's (capped by ``max_keep``) over a fixed draw of
    2048 clips (seed 0), without the clips left with no context (which the official sampler redraws). Their sum
    is at most L, so the two cuts never overlap. ValueError when almost every union covers the grid."""
    generator = torch.Generator().manual_seed(0)
    samples, length = TUBE_REFERENCE_SAMPLES, depth * rows * cols
    u = torch.rand(samples, 3, generator=generator, dtype=torch.float64)
    shape = _tube_shape(u, depth, rows, cols, temporal_scale, spatial_scale, aspect_ratio)
    context_frames = max(1, int(depth * max_temporal_keep))
    counts = _tube_unions(generator, (samples,), depth, rows, cols, num_blocks, *shape, context_frames).sum(-1)
    counts = counts[counts < length].sort().values  # the official sampler redraws a clip left with no context
    k = int(len(counts) * TUBE_LENGTH_QUANTILE)
    if len(counts) <= 2 * k:
        raise ValueError(
            f"{num_blocks} blocks of spatial scale {list(spatial_scale)} cover the whole {depth}x{rows}x{cols} tubelet "
            f"grid in almost every clip; lower num_blocks or spatial_scale"
        )
    target, context = int(counts[k]), length - int(counts[len(counts) - 1 - k])
    if max_keep is not None:
        context = min(context, int(max_keep))
    if context < 1:
        raise ValueError(f"max_keep must be at least 1, got {max_keep}")
    return MaskLengths(target=target, context=context)


def tube_masks(
    generator: torch.Generator, batch: int, depth: int, rows: int, cols: int, num_blocks: int = 8,
    spatial_scale=(0.15, 0.15), temporal_scale=(1.0, 1.0), aspect_ratio=(0.75, 1.5), max_temporal_keep: float = 1.0,
    max_keep: int | None = None, patience: int = 4, lengths: MaskLengths | None = None,
) -> TubeMasks:  # fmt: skip
    """V-JEPA tube masks for a batch of clips, on the generator's device, in one pass with static shapes.

    Three uniforms set the batch's block size (:func:`_tube_shape`, the official order: temporal scale, spatial
    scale, aspect ratio); each clip draws ``patience`` candidate unions and takes the first whose size lies in
    [``lengths.target``, L - ``lengths.context``] (the last one otherwise). The targets are the first
    ``lengths.target`` tubelets of the union, the context the first ``lengths.context`` of the rest, in row-major
    order (the official cut); a union outside the range is topped up or trimmed from the other end
    (:func:`_filled_first`), so target and context never share a tubelet. ``lengths``: computed once by the caller
    (:func:`tube_mask_lengths` of the same arguments), else here.
    """
    if num_blocks < 1 or patience < 1:
        raise ValueError(f"num_blocks and patience must be at least 1, got {num_blocks} and {patience}")
    if lengths is None:
        lengths = tube_mask_lengths(depth, rows, cols, num_blocks, tuple(spatial_scale), tuple(temporal_scale),
                                    tuple(aspect_ratio), max_temporal_keep, max_keep)  # fmt: skip
    length = depth * rows * cols
    u = torch.rand(3, generator=generator, device=generator.device, dtype=torch.float64)
    shape = _tube_shape(u, depth, rows, cols, temporal_scale, spatial_scale, aspect_ratio)
    context_frames = max(1, int(depth * max_temporal_keep))
    unions = _tube_unions(generator, (batch, patience), depth, rows, cols, num_blocks, *shape, context_frames)
    counts = unions.sum(dim=-1)
    ok = (counts >= lengths.target) & (counts <= length - lengths.context)
    ok[:, -1] = True
    first = ok.to(torch.int8).argmax(dim=1)
    chosen = unions.gather(1, first.view(-1, 1, 1).expand(-1, 1, length)).squeeze(1)
    return TubeMasks(context=_filled_first(~chosen, lengths.context), targets=_filled_first(chosen, lengths.target))
