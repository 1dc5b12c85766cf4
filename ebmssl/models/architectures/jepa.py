"""Joint-embedding predictive architecture on patch tokens: I-JEPA, and JEPA with capacity instead of EMA.

Energy view (docs/design.md, "Beyond joint embedding", last row): ``E(x, y) = D(pred(enc(x), z), enc'(y))`` where x is the
context block, y the target blocks of the same image and the latent z the targets' positions (the
predictor's mask tokens carry them).

I-JEPA (Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding Predictive
Architecture"; official code facebookresearch/ijepa, ``src/train.py`` and ``src/models/vision_transformer.py``):

* masks: :func:`ebmssl.models.masking.multi_block_masks` (one context block, ``num_targets`` target
  blocks), drawn on the device from the batch's generator, with lengths fixed by the config;
* context encoder: the ViT on the context patches only (``ViTBackbone.tokens(x, keep=context)``);
* target encoder (``model.target_encoder: {momentum, final_momentum, schedule}``): a momentum copy of the
  context encoder run on the whole image without gradient; its final-layer-normed patch tokens are
  layer-normed again without affine parameters (``F.layer_norm(h, (D,))``), then gathered per target block;
* predictor (``model.token_predictor``, :class:`JEPAPredictor`, the official ``VisionTransformerPredictor``): the context tokens mapped to the
  predictor width plus the fixed sine-cosine position of their patch, then one mask token per target
  patch plus that patch's position; pre-norm transformer blocks; the mask tokens' outputs are mapped
  back to the encoder width. Each target block is predicted in its own sequence (the official code
  repeats the context batch once per block);
* loss: the objective with ``energy: smooth_l1`` on the rows (predicted token, target token) of every
  block and sample, handed over as two views compared by ``pairs: [[0, 1]]``, i.e. ``F.smooth_l1_loss(z, h)`` averaged over all elements, as the official
  ``loss_fn``; the EMA momentum rises linearly from 0.996 to 1.0 (official ``momentum_scheduler``).

JEPA with capacity (``model.target_encoder: shared``; eb_jepa, LeJEPA style): no momentum copy; the target
tokens come from the same encoder on the whole image *with* gradient, and the objective's capacity
strategies (VICReg variance + covariance, SIGReg) see the predictions and the targets as the two views, so a constant embedding is penalised instead of being prevented by asymmetry.

The evaluated encoder (``.encoder``) is the context encoder (the official I-JEPA evaluates the target
encoder; with momentum -> 1 they coincide at the end of training); its features are the mean
final-layer-normed patch token with ``pool: mean``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ebmssl.models.architectures._common import MaskTokenTransformer, check_section, sub_mapping
from ebmssl.models.architectures.base import Architecture, LearnerOutput, default_generator
from ebmssl.models.masking import BlockMasks, MaskLengths, block_mask_lengths, gather_tokens, multi_block_masks
from ebmssl.models.target import TargetBranch, build_target_encoder
from ebmssl.registry import ConfigError, register_architecture

PREDICTOR_KEYS = ("width", "depth", "num_heads", "mlp_ratio")
MASK_KEYS = (
    "num_targets", "target_scale", "target_aspect_ratio", "context_scale", "context_aspect_ratio", "min_keep", "allow_overlap",
    "context_keep",
)  # fmt: skip


class JEPAPredictor(MaskTokenTransformer):
    """Narrow transformer predicting target-patch embeddings from context tokens and target positions."""

    def __init__(self, embed_dim: int, width: int = 384, depth: int = 6, num_heads: int = 6, mlp_ratio: float = 4.0) -> None:
        super().__init__(embed_dim, width, depth, num_heads, mlp_ratio, init_mask_token=nn.init.trunc_normal_)
        self.project = nn.Linear(width, embed_dim)

    def forward(
        self, context: torch.Tensor, context_index: torch.Tensor, target_index: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        """context (B, Kc, D) at patches context_index (B, Kc); predictions (B, Kt, D) at target_index (B, Kt)."""
        x = self.embed(context)
        pos = self.positions(grid, x).unsqueeze(0).expand(x.shape[0], -1, -1)
        x = x + gather_tokens(pos, context_index)
        queries = self.mask_token.to(x.dtype) + gather_tokens(pos, target_index)
        x = self.transformer(torch.cat([x, queries], dim=1))
        return self.project(x[:, context.shape[1] :])


class JEPA(Architecture):
    """Context encoder, predictor, and a momentum (I-JEPA) or shared (capacity) target encoder."""

    def __init__(
        self, encoder: nn.Module, predictor: JEPAPredictor, objective: nn.Module, masks: Mapping[str, Any], target: TargetBranch
    ) -> None:
        super().__init__()
        self.context_encoder = encoder
        self.predictor = predictor
        self.mask_config = dict(masks)
        # the mask lengths per patch grid, a function of the config: computed here, outside any traced region
        self.mask_lengths: dict[tuple[int, int], MaskLengths] = {}
        size = getattr(encoder, "image_size", None)
        if size is not None:
            self._lengths(encoder.grid(size, size))
        self.attach(objective, target)

    # -- the architecture contract ------------------------------------------------------------------
    @property
    def encoder(self) -> nn.Module:
        return self.context_encoder

    def embed(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [self.context_encoder(view) for view in views]

    # -- forward ------------------------------------------------------------------------------------
    def _lengths(self, grid: tuple[int, int]) -> MaskLengths:
        """The mask lengths on ``grid`` (computed once per grid; the training size's at construction)."""
        if grid not in self.mask_lengths:
            keys = ("num_targets", "allow_overlap", "patience")
            self.mask_lengths[grid] = block_mask_lengths(*grid, **{k: v for k, v in self.mask_config.items() if k not in keys})
        return self.mask_lengths[grid]

    def sample_masks(self, images: torch.Tensor, generator: torch.Generator | None) -> BlockMasks:
        grid = tuple(self.context_encoder.grid(*images.shape[-2:]))
        masks = multi_block_masks(
            default_generator(generator, images), images.shape[0], *grid, **self.mask_config, lengths=self._lengths(grid)
        )
        return BlockMasks(masks.context.to(images.device), masks.targets.to(images.device))  # no-ops: drawn there

    def targets(self, images: torch.Tensor, masks: BlockMasks) -> torch.Tensor:
        """(M * N, Kt, D) layer-normed target tokens, block-major (official ``repeat_interleave_batch`` order)."""
        target_encoder = self.target.encoder()
        if target_encoder is not None:  # the momentum copy: no gradient
            with torch.no_grad():
                _, tokens = target_encoder.tokens(images)
        else:  # shared: the context encoder itself, with gradient
            _, tokens = self.context_encoder.tokens(images)
        tokens = F.layer_norm(tokens, (tokens.shape[-1],))
        return torch.cat([gather_tokens(tokens, block) for block in masks.targets], dim=0)

    def predictions(self, images: torch.Tensor, masks: BlockMasks) -> tuple[torch.Tensor, torch.Tensor]:
        """((M * N, Kt, D) predictions, (N, Kc, D) context tokens)."""
        grid = self.context_encoder.grid(*images.shape[-2:])
        _, context = self.context_encoder.tokens(images, masks.context)
        num_blocks = masks.targets.shape[0]
        repeated = context.repeat(num_blocks, 1, 1)
        context_index = masks.context.repeat(num_blocks, 1)
        target_index = masks.targets.reshape(-1, masks.targets.shape[-1])
        return self.predictor(repeated, context_index, target_index, grid), context

    def forward(self, views: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> LearnerOutput:
        images = views[0]
        return self.forward_masked(images, self.sample_masks(images, generator))

    def forward_masked(self, images: torch.Tensor, masks: BlockMasks) -> LearnerOutput:
        """The loss for given masks (``forward`` draws them from the batch generator first)."""
        target = self.targets(images, masks)
        prediction, context = self.predictions(images, masks)
        # (prediction, target) as two views compared by pairs [[0, 1]]; the momentum target's rows carry
        # no gradient, the shared encoder's do (and capacity terms see both views)
        rows = [prediction.reshape(-1, prediction.shape[-1]), target.reshape(-1, target.shape[-1])]
        return self.score(rows, None, context.mean(dim=1))


def build_vit_encoder(model_config: Mapping[str, Any], in_channels: int, where: str, mask_token: bool = False) -> nn.Module:
    """The ``backbone:`` of a patch-token architecture, refused (ConfigError) unless it encodes a subset of its
    patches (``tokens(x, keep)`` and ``grid``); ``mask_token``: it must also replace masked patch embeddings by
    a mask token (``tokens(x, masked=..., mask_token=...)``, iBOT / DINOv2 / SimMIM)."""
    import inspect

    from ebmssl.models import build_backbone

    if "backbone" not in model_config:
        raise ConfigError(
            f"{where}: no `backbone:`. Add a ViT, e.g. `backbone: {{name: vit, variant: vit_tiny, image_size: 28, "
            f"patch_size: 4, pool: mean}}`."
        )
    spec = dict(model_config["backbone"])
    spec.setdefault("in_channels", in_channels)
    encoder = build_backbone(spec, where=f"{where}.backbone")
    if not hasattr(encoder, "tokens") or not hasattr(encoder, "grid"):
        raise ConfigError(
            f"{where}.backbone: {spec.get('name')!r} cannot encode a subset of patches; this architecture needs "
            f"a patch-token backbone: `{{name: vit, ...}}`."
        )
    if mask_token and "masked" not in inspect.signature(encoder.tokens).parameters:
        raise ConfigError(
            f"{where}.backbone: {spec.get('name')!r} cannot put a mask token in place of masked patches (its "
            f"`tokens()` takes no `masked=`); this architecture needs ebmssl's ViT: `{{name: vit, ...}}`."
        )
    return encoder


@register_architecture("jepa")
def build_jepa(
    *,
    objective: nn.Module,
    num_global: int,
    in_channels: int,
    location: str = "model",
    backbone: Mapping[str, Any] | None = None,
    token_predictor: Mapping[str, Any] | None = None,
    masks: Mapping[str, Any] | None = None,
    target_encoder: Mapping[str, Any] | str | None = None,
) -> JEPA:
    """I-JEPA (``target_encoder: {momentum: ...}``) or JEPA with capacity terms (``target_encoder: shared``) on a ViT."""
    where = location
    model_config = {"backbone": backbone, "token_predictor": token_predictor, "masks": masks}
    encoder = build_vit_encoder({k: v for k, v in model_config.items() if v is not None}, in_channels, where)
    predictor_spec = sub_mapping(model_config, "token_predictor", where)
    check_section(predictor_spec, PREDICTOR_KEYS, where, "token_predictor")
    mask_spec = sub_mapping(model_config, "masks", where)
    check_section(mask_spec, MASK_KEYS, where, "masks")
    for key in ("target_scale", "target_aspect_ratio", "context_scale", "context_aspect_ratio"):
        if key in mask_spec:
            mask_spec[key] = tuple(float(v) for v in mask_spec[key])
    spec = target_encoder if target_encoder is not None else {"momentum": 0.996, "final_momentum": 1.0}
    target = build_target_encoder(spec, f"{where}.target_encoder", schedule="linear")
    try:
        predictor = JEPAPredictor(encoder.output_dim, **predictor_spec)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}.token_predictor: {error}.") from error
    size = getattr(encoder, "image_size", None)
    if size is not None:  # the mask lengths are a pure function of the grid and the ranges: check them once
        try:
            block_mask_lengths(*encoder.grid(size, size), **{k: v for k, v in mask_spec.items() if k not in ("num_targets", "allow_overlap")})
        except ValueError as error:
            raise ConfigError(f"{where}.masks: {error}.") from error
    return JEPA(encoder, predictor, objective, mask_spec, target)
