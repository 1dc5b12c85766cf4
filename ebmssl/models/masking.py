"""Patch masks for masked image modelling, drawn on the device of the batch's generator.

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
  target-removal constraint one block at a time after 20 failed tries). Deviations: every draw comes
  from the given generator, on its device, in one vectorised pass (the official code draws block
  positions from the global RNG in a Python loop); a block's top-left corner ranges over every position
  that fits (``0 .. grid - size``; the official ``randint(0, grid - size)`` never places a block on the
  last row or column); and every mask keeps a number of patches fixed by the config
  (:func:`block_mask_lengths`) instead of being cut to the shortest mask of the batch: a target block
  keeps the smallest block the target ranges allow (its first patches in row-major order, the
  official cut), the context keeps ``context_keep`` patches (default ``min_keep + 1``, the least the
  official sampler keeps) and a context candidate is accepted when it holds that many. So every
  process and every step has the same shapes (gathers across processes, ``torch.compile``), and no
  step reads the device.
"""

from __future__ import annotations

import functools
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
    noise = torch.rand(batch, num_patches, generator=generator, device=generator.device)
    order = torch.argsort(noise, dim=1)
    keep, _ = order[:, :len_keep].sort(dim=1)
    masked, _ = order[:, len_keep:].sort(dim=1)
    return RandomMasks(keep=keep, masked=masked)


def _block_shape(u, grid_h: int, grid_w: int, scale: tuple[float, float], aspect_ratio: tuple[float, float]):
    """I-JEPA's ``_sample_block_size`` for a uniform draw ``u`` (a float, or a float64 tensor on any device).

    One draw sets both the scale s = s_min + u (s_max - s_min) and the aspect ratio a = a_min + u (a_max -
    a_min); area = int(H W s); h = round(sqrt(area a)), w = round(sqrt(area / a)) (half to even, as Python's
    ``round``), each shrunk below the grid side and at least 1.
    """
    if isinstance(u, torch.Tensor):
        area = torch.floor(grid_h * grid_w * (scale[0] + u * (scale[1] - scale[0])))
        ratio = aspect_ratio[0] + u * (aspect_ratio[1] - aspect_ratio[0])
        h = torch.round(torch.sqrt(area * ratio)).clamp(1, grid_h - 1 if grid_h > 1 else 1).long()
        w = torch.round(torch.sqrt(area / ratio)).clamp(1, grid_w - 1 if grid_w > 1 else 1).long()
        return h, w
    area = int(grid_h * grid_w * (scale[0] + u * (scale[1] - scale[0])))
    ratio = aspect_ratio[0] + u * (aspect_ratio[1] - aspect_ratio[0])
    h = min(int(round(math.sqrt(area * ratio))), grid_h - 1)
    w = min(int(round(math.sqrt(area / ratio))), grid_w - 1)
    return max(h, 1), max(w, 1)


def sample_block_size(
    generator: torch.Generator, grid_h: int, grid_w: int, scale: tuple[float, float], aspect_ratio: tuple[float, float]
) -> tuple[int, int]:
    """One (height, width) on the host, as I-JEPA's ``_sample_block_size`` (see :func:`_block_shape`)."""
    return _block_shape(float(torch.rand(1, generator=generator)), grid_h, grid_w, scale, aspect_ratio)


@functools.lru_cache(maxsize=64)
def smallest_block(grid_h: int, grid_w: int, scale: tuple[float, float], aspect_ratio: tuple[float, float]) -> int:
    """The fewest patches a block of the given ranges can hold, min over u of h(u) w(u): a pure function of the
    config (the shape changes at finitely many u; a fine scan of [0, 1] visits every piece). Cached: a config
    asks for the same few values every step (a caller being traced passes ``lengths`` instead: Dynamo would
    unroll the 20001-step scan, minutes of tracing)."""
    return min(math.prod(_block_shape(i / 20000, grid_h, grid_w, scale, aspect_ratio)) for i in range(20001))


def _first_indices(mask: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` smallest row-major indices where ``mask`` (..., L) is true, ascending, then (a row with
    fewer) the smallest where it is false: a sort with a static shape in place of ``nonzero`` (no host read)."""
    length = mask.shape[-1]
    index = torch.arange(length, device=mask.device)
    keys = torch.where(mask, index, index + length)  # distinct keys: true entries first, each in position order
    return keys.sort(dim=-1).indices[..., :count]


def _blocks(generator: torch.Generator, shape: tuple[int, ...], grid_h: int, grid_w: int, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Boolean (*shape, H * W) masks of h x w blocks at uniformly drawn top-left corners (every position that fits)."""
    device = generator.device
    corner = torch.rand((*shape, 2), generator=generator, device=device, dtype=torch.float64)
    top = torch.floor(corner[..., 0] * (grid_h - h + 1)).long().unsqueeze(-1)
    left = torch.floor(corner[..., 1] * (grid_w - w + 1)).long().unsqueeze(-1)
    rows = torch.arange(grid_h * grid_w, device=device) // grid_w
    cols = torch.arange(grid_h * grid_w, device=device) % grid_w
    return (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)


@dataclass(frozen=True)
class MaskLengths:
    """How many patches every I-JEPA mask keeps: a pure function of the grid and the block ranges."""

    target: int  # patches per target block: the smallest block the target ranges allow
    context: int  # patches per context: ``context_keep``, or min_keep + 1 (the least the official sampler keeps)


def block_mask_lengths(
    grid_h: int, grid_w: int, target_scale=(0.15, 0.2), target_aspect_ratio=(0.75, 1.5), context_scale=(0.85, 1.0),
    context_aspect_ratio=(1.0, 1.0), min_keep: int = 10, context_keep: int | None = None,
) -> MaskLengths:  # fmt: skip
    """The fixed mask lengths of :func:`multi_block_masks` (ValueError when the ranges cannot provide them)."""
    if min_keep >= grid_h * grid_w:
        raise ValueError(f"min_keep={min_keep} must be smaller than the {grid_h * grid_w} patches of the grid")
    target = smallest_block(grid_h, grid_w, tuple(target_scale), tuple(target_aspect_ratio))
    context = int(context_keep) if context_keep is not None else min_keep + 1
    largest = smallest_block(grid_h, grid_w, tuple(context_scale), tuple(context_aspect_ratio))
    if context > largest or context < 1:
        raise ValueError(
            f"cannot place a context block with {context} patches on a {grid_h}x{grid_w} grid (the smallest context "
            f"block holds {largest}); lower min_keep or context_keep"
        )
    return MaskLengths(target=target, context=context)


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
    context_keep: int | None = None,
    patience: int = 20,
    lengths: MaskLengths | None = None,
) -> BlockMasks:
    """I-JEPA multi-block masks for a batch (see the module docstring), on the generator's device.

    A pure function of ``generator``, drawn in one pass with static shapes (no host read): per batch one
    target and one context block shape; per sample ``num_targets`` target blocks and, for each relaxation
    level r = 0..M (the last r target blocks released from the constraint, as the official loop after every
    ``patience`` failures), ``patience`` context candidates; the first candidate in (r, try) order that keeps
    at least ``lengths.context`` patches is taken (level M always does). Every mask keeps the first
    :func:`block_mask_lengths` patches in row-major order (the official collator's cut, with a length fixed by
    the config instead of the shortest mask of the batch). ``lengths``: those lengths computed once by the caller
    (the architecture, at construction: they are a function of the config), else computed here.
    """
    if num_targets < 1:
        raise ValueError(f"num_targets must be at least 1, got {num_targets}")
    if lengths is None:
        lengths = block_mask_lengths(grid_h, grid_w, target_scale, target_aspect_ratio, context_scale,
                                     context_aspect_ratio, min_keep, context_keep)  # fmt: skip
    device = generator.device
    u = torch.rand(2, generator=generator, device=device, dtype=torch.float64)
    target_h, target_w = _block_shape(u[0], grid_h, grid_w, target_scale, target_aspect_ratio)
    context_h, context_w = _block_shape(u[1], grid_h, grid_w, context_scale, context_aspect_ratio)
    targets = _blocks(generator, (batch, num_targets), grid_h, grid_w, target_h, target_w)  # (N, M, L)
    levels = 1 if allow_overlap else num_targets + 1
    candidates = _blocks(generator, (batch, levels, patience), grid_h, grid_w, context_h, context_w)  # (N, R, T, L)
    if not allow_overlap:
        # level r forbids the first M - r target blocks: cumulative unions, from none (level M) to all (level 0)
        unions = torch.cumsum(targets.long(), dim=1).clamp(max=1).bool()  # (N, M, L): union of the first m + 1
        empty = torch.zeros_like(unions[:, :1])
        forbidden = torch.cat([unions.flip(1), empty], dim=1)  # level r -> union of the first M - r blocks
        candidates = candidates & ~forbidden.unsqueeze(2)
    ok = (candidates.sum(dim=-1) >= lengths.context).flatten(1)  # (N, R * T); the last level always holds
    ok[:, -patience:] = True
    first = ok.to(torch.int8).argmax(dim=1)  # the first acceptable candidate
    flat = candidates.flatten(1, 2)
    chosen = flat.gather(1, first.view(-1, 1, 1).expand(-1, 1, flat.shape[-1])).squeeze(1)  # (N, L)
    return BlockMasks(
        context=_first_indices(chosen, lengths.context),
        targets=_first_indices(targets, lengths.target).transpose(0, 1).contiguous(),
    )


def gather_tokens(tokens: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``tokens`` (N, L, D) at ``indices`` (N, K): (N, K, D) (the official ``apply_masks`` for one mask)."""
    return torch.gather(tokens, 1, indices.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


# -- iBOT / BEiT block masks ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockMaskSpec:
    """iBOT / BEiT block masking of the student's global views (``model.masks``), a pure config.

    ``ratio`` (low, high): each masked image draws its ratio r ~ U(low, high) and masks at most
    ``floor(r L)`` of its L patches (iBOT ``pred_ratio 0.3 +- pred_ratio_var 0.2``; DINOv2
    ``mask_ratio_min_max (0.1, 0.5)``); ``probability``: the fraction of the images masked at all, the
    others keep every patch (DINOv2 ``mask_probability 0.5``; iBOT masks every global crop: 1.0);
    ``num_blocks``: how many candidate blocks each image draws (the official loop draws until the count is
    reached); ``min_patches``: the smallest block (official ``min_num_patches 4``); ``aspect_ratio``: the
    block aspect range, drawn log-uniformly (official (0.3, 1 / 0.3)).
    """

    ratio: tuple[float, float] = (0.1, 0.5)
    probability: float = 1.0
    num_blocks: int = 16
    min_patches: int = 4
    aspect_ratio: tuple[float, float] = (0.3, 1 / 0.3)

    def __post_init__(self) -> None:
        low, high = (float(v) for v in self.ratio)
        if not 0.0 <= low <= high < 1.0:
            raise ValueError(f"ratio must be [low, high] with 0 <= low <= high < 1, got {list(self.ratio)}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must lie in [0, 1], got {self.probability}")
        if self.num_blocks < 1 or self.min_patches < 1:
            raise ValueError(f"num_blocks and min_patches must be >= 1, got {self.num_blocks}, {self.min_patches}")
        if not 0.0 < self.aspect_ratio[0] <= self.aspect_ratio[1]:
            raise ValueError(f"aspect_ratio must be [low, high] with 0 < low <= high, got {list(self.aspect_ratio)}")

    def masked_images(self, batch: int) -> int:
        """How many of ``batch`` images are masked: round(probability * batch), a function of the config."""
        return round(self.probability * batch)

    def max_masked(self, length: int) -> int:
        """The most patches one image of ``length`` patches can have masked: floor(high ratio * length)."""
        return math.floor(float(self.ratio[1]) * length)


def masked_token_slots(masks: torch.Tensor, images: int, slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the masked tokens of ``masks`` (N, L) lie, in a fixed number of slots: ``(rows, columns)`` with
    rows (images,) and columns (images, slots) such that every True entry of ``masks`` is at some
    ``(rows[i], columns[i, j])``, masked tokens first in each row, then unmasked fillers.

    Shapes are functions of the config, not of the draw (``images`` >= the images with any masked token,
    ``slots`` >= the masked tokens of one image: :meth:`BlockMaskSpec.masked_images` and
    :meth:`BlockMaskSpec.max_masked`), so the selection is I-JEPA's static-shape sort (:func:`_first_indices`)
    on the device with no host read.
    DINOv2 computes its patch head on the masked tokens only (``ssl_meta_arch.py``: ``mask_indices_list``,
    gathered on the host in its collate function); a term that weighs tokens by the mask gives the same
    value on these slots, at ``slots / L`` of the head's cost per image and ``images / N`` of the images.
    """
    rows = _first_indices(masks.any(dim=1), images)  # the masked images, then unmasked fillers, by position
    return rows, _first_indices(masks[rows], slots)


def ibot_block_masks(generator: torch.Generator, batch: int, grid_h: int, grid_w: int, spec: BlockMaskSpec = BlockMaskSpec()) -> torch.Tensor:
    """(N, H * W) bool masks, True on the patches the student sees as the mask token (iBOT / BEiT blocks).

    iBOT (Zhou et al. 2022; github.com/bytedance/ibot ``loader.py: ImageFolderMask``, ``masking_generator.py:
    MaskingGenerator``, after BEiT's): per image a budget ``floor(r L)``, r ~ U(ratio); blocks of area
    a ~ U(min_patches, budget left) and aspect e^U(log aspect range), h = round(sqrt(a e)), w = round(sqrt(a / e)),
    placed uniformly; a block is kept when it fits the grid (h < H, w < W) and adds between 1 and the budget
    left of new patches. Every draw is on the generator's device in one pass with static shapes: each image
    tries ``num_blocks`` candidates in order (the official loop tries until the budget is met or a block
    adds nothing after 10 attempts), so the masked count lies in [0, floor(r L)]; the loss weighs the masked
    tokens (:func:`ebmssl.energies.tokens.per_image_masked_mean`) and never selects them, so counts may differ
    per image without a host read. The images masked at all are ``round(probability N)`` chosen uniformly
    (DINOv2's ``n_samples_masked``; their ratios are spread by ``linspace``, drawn uniformly here).
    """
    device = generator.device
    length = grid_h * grid_w
    u = torch.rand(batch, 2 + 4 * spec.num_blocks, generator=generator, device=device, dtype=torch.float64)
    low, high = float(spec.ratio[0]), float(spec.ratio[1])
    budget = torch.floor(length * (low + u[:, 0] * (high - low)))  # (N,) patches allowed
    chosen = u[:, 1].argsort().argsort() < spec.masked_images(batch)  # round(p N) images, uniformly
    budget = torch.where(chosen, budget, torch.zeros_like(budget))
    draws = u[:, 2:].view(batch, spec.num_blocks, 4)
    log_low, log_high = math.log(spec.aspect_ratio[0]), math.log(spec.aspect_ratio[1])
    rows = (torch.arange(length, device=device) // grid_w).unsqueeze(0)
    cols = (torch.arange(length, device=device) % grid_w).unsqueeze(0)
    mask = torch.zeros(batch, length, dtype=torch.bool, device=device)
    count = torch.zeros(batch, dtype=torch.float64, device=device)
    for k in range(spec.num_blocks):
        left_over = budget - count
        area = spec.min_patches + draws[:, k, 0] * (left_over - spec.min_patches)  # uniform(min, left), either order
        aspect = torch.exp(log_low + draws[:, k, 1] * (log_high - log_low))
        h = torch.round(torch.sqrt(area.clamp(min=0) * aspect))
        w = torch.round(torch.sqrt(area.clamp(min=0) / aspect))
        fits = (h >= 1) & (w >= 1) & (h < grid_h) & (w < grid_w)
        top = torch.floor(draws[:, k, 2] * (grid_h - h + 1).clamp(min=1)).unsqueeze(1)
        left = torch.floor(draws[:, k, 3] * (grid_w - w + 1).clamp(min=1)).unsqueeze(1)
        block = (rows >= top) & (rows < top + h.unsqueeze(1)) & (cols >= left) & (cols < left + w.unsqueeze(1))
        grown = mask | block
        added = grown.sum(dim=1).to(torch.float64) - count
        accept = fits & (added >= 1) & (added <= left_over)
        mask = torch.where(accept.unsqueeze(1), grown, mask)
        count = torch.where(accept, count + added, count)
    return mask
