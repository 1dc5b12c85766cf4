"""V-JEPA: masked tube prediction in embedding space, on clips (N, T, C, H, W).

Energy view (docs/design.md, "Beyond joint embedding"): ``E(x, y) = D(pred(enc(x), z), enc'(y))`` with x the
visible tubelets of a clip, y its masked tubelets and the latent z their positions (the predictor's mask tokens
carry them), as I-JEPA (:mod:`ebmssl.models.architectures.jepa`) on a spatio-temporal grid.

V-JEPA (Bardes et al. 2024, "Revisiting Feature Prediction for Learning Visual Representations from Video";
official code facebookresearch/jepa, ``app/vjepa/train.py``, ``src/masks/multiblock3d.py``,
``src/models/predictor.py``):

* masks (``model.masks``: a list, one entry per mask configuration; official: short range, 8 blocks of spatial
  scale 0.15, and long range, 2 blocks of 0.7, both over the whole clip): :func:`ebmssl.models.tube_masking.tube_masks`,
  drawn on the device from the batch's generator, mask by mask in list order, lengths fixed by the config
  (:func:`ebmssl.models.tube_masking.tube_mask_lengths`);
* context encoder: the tubelet ViT on each mask's visible tubelets (``tokens(clips, keep=context)``; the
  official ``MultiMaskWrapper`` runs the encoder once per mask);
* target encoder (``model.target_encoder: {momentum, final_momentum, schedule}``): the momentum copy
  (:mod:`ebmssl.models.target`) on the whole clip without gradient, tokens layer-normed again without affine
  parameters (``F.layer_norm(h, (D,))``), gathered at each mask's targets;
* predictor (``model.token_predictor``, :class:`TubePredictor`): the context tokens mapped to the predictor width
  plus fixed 3-D sine-cosine positions, one learned mask token per mask configuration (zero-initialised, the
  official ``use_mask_tokens``, ``zero_init_mask_tokens``) plus each target's position, pre-norm transformer
  blocks, the mask tokens' outputs mapped back to the encoder width;
* loss: the objective with ``energy: {name: abs_power, exponent: 1.0}`` over the views ``[prediction_0, ...,
  prediction_{M-1}, target_0, ..., target_{M-1}]`` (rows = tokens of every clip) compared by ``pairs: [[0, M],
  [1, M + 1], ...]`` with ``pair_reduction: mean``: ``(1/M) sum_m mean(|z_m - h_m|^p) / p``, the official
  ``loss_fn`` (``loss_exp`` p = 1, ``reg_coeff`` 0); the momentum rises linearly from 0.998 to 1.0.

``model.target_encoder: shared`` uses the context encoder itself, with gradient, for the targets (then capacity
terms must prevent collapse, as ``jepa_vicreg``). The evaluated encoder (``.encoder``) is the context encoder; its
features are its mean final token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ebmssl.models.architectures._common import TransformerStack, check_section, sub_mapping
from ebmssl.models.architectures.base import Architecture, LearnerOutput, default_generator
from ebmssl.models.backbones.tubelet_vit import sincos_3d
from ebmssl.models.masking import MaskLengths, gather_tokens
from ebmssl.models.target import TargetBranch, build_target_encoder
from ebmssl.models.tube_masking import TubeMasks, tube_mask_lengths, tube_masks
from ebmssl.registry import ConfigError, register_architecture

PREDICTOR_KEYS = ("width", "depth", "num_heads", "mlp_ratio")
TUBE_MASK_KEYS = ("num_blocks", "spatial_scale", "temporal_scale", "aspect_ratio", "max_temporal_keep", "max_keep", "patience")
RANGE_KEYS = ("spatial_scale", "temporal_scale", "aspect_ratio")
# the official pretraining masks (configs/pretrain/vitl16.yaml): short range, then long range
OFFICIAL_MASKS = (
    {"num_blocks": 8, "spatial_scale": (0.15, 0.15), "temporal_scale": (1.0, 1.0), "aspect_ratio": (0.75, 1.5)},
    {"num_blocks": 2, "spatial_scale": (0.7, 0.7), "temporal_scale": (1.0, 1.0), "aspect_ratio": (0.75, 1.5)},
)


class TubePredictor(nn.Module):
    """Narrow transformer predicting masked tubelet embeddings from the context tokens and the targets' positions."""

    def __init__(
        self, embed_dim: int, num_masks: int, width: int = 384, depth: int = 12, num_heads: int = 6, mlp_ratio: float = 4.0
    ) -> None:
        super().__init__()
        self.width = width
        self.embed = nn.Linear(embed_dim, width)
        self.mask_tokens = nn.Parameter(torch.zeros(num_masks, 1, width))  # one per mask configuration, zero-init
        self.transformer = TransformerStack(width, depth, num_heads, mlp_ratio)
        self.project = nn.Linear(width, embed_dim)
        self._positions: dict[tuple, torch.Tensor] = {}

    def positions(self, grid: tuple[int, int, int], like: torch.Tensor) -> torch.Tensor:
        """(depth * rows * columns, width) fixed 3-D sine-cosine positions on ``like``'s device and dtype."""
        if torch.compiler.is_compiling():  # a cache filled while tracing is guarded on and recompiles
            return sincos_3d(self.width, *grid).to(device=like.device, dtype=like.dtype)
        key = (tuple(grid), like.device, like.dtype)
        if key not in self._positions:
            self._positions[key] = sincos_3d(self.width, *grid).to(device=like.device, dtype=like.dtype)
        return self._positions[key]

    def forward(
        self, context: torch.Tensor, context_index: torch.Tensor, target_index: torch.Tensor,
        grid: tuple[int, int, int], mask_index: int,
    ) -> torch.Tensor:  # fmt: skip
        """context (N, Kc, D) at tubelets context_index (N, Kc); predictions (N, Kt, D) at target_index (N, Kt)."""
        x = self.embed(context)
        pos = self.positions(grid, x).unsqueeze(0).expand(x.shape[0], -1, -1)
        x = x + gather_tokens(pos, context_index)
        queries = self.mask_tokens[mask_index].to(x.dtype) + gather_tokens(pos, target_index)
        x = self.transformer(torch.cat([x, queries], dim=1))
        return self.project(x[:, context.shape[1] :])


class VJEPA(Architecture):
    """Context encoder on the visible tubelets, a predictor per mask, and a momentum (or shared) target encoder."""

    def __init__(
        self, encoder: nn.Module, predictor: TubePredictor, objective: nn.Module, masks: Sequence[Mapping[str, Any]],
        target: TargetBranch,
    ) -> None:  # fmt: skip
        super().__init__()
        self.context_encoder = encoder
        self.predictor = predictor
        self.mask_configs = [dict(m) for m in masks]
        self.objective_views = 2 * len(self.mask_configs)  # predictions then targets (read by the build check)
        # mask lengths per tubelet grid, a function of the config: the training clip's computed here, outside a trace
        self.mask_lengths: dict[tuple[int, int, int], list[MaskLengths]] = {}
        self._lengths(encoder.clip_grid(encoder.num_frames, encoder.image_size, encoder.image_size))
        self.attach(objective, target)

    @property
    def encoder(self) -> nn.Module:
        return self.context_encoder

    def embed(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [self.context_encoder(view) for view in views]

    def _lengths(self, grid: tuple[int, int, int]) -> list[MaskLengths]:
        if grid not in self.mask_lengths:
            self.mask_lengths[grid] = [
                tube_mask_lengths(*grid, **{k: v for k, v in m.items() if k != "patience"}) for m in self.mask_configs
            ]
        return self.mask_lengths[grid]

    def grid_of(self, clips: torch.Tensor) -> tuple[int, int, int]:
        return tuple(self.context_encoder.clip_grid(clips.shape[1], clips.shape[-2], clips.shape[-1]))

    # drawn eagerly: Dynamo cannot trace a torch.Generator; one graph break here, not one per draw (half the compile time)
    @torch.compiler.disable(reason="tube masks are drawn eagerly from the batch's torch.Generator")
    def sample_masks(self, clips: torch.Tensor, generator: torch.Generator | None) -> list[TubeMasks]:
        """One :class:`TubeMasks` per mask configuration, drawn in list order from the batch's generator."""
        grid = self.grid_of(clips)
        generator = default_generator(generator, clips)
        return [
            tube_masks(generator, clips.shape[0], *grid, **config, lengths=lengths)
            for config, lengths in zip(self.mask_configs, self._lengths(grid))
        ]

    def targets(self, clips: torch.Tensor, masks: Sequence[TubeMasks]) -> list[torch.Tensor]:
        """Per mask (N, Kt, D): the target encoder's layer-normed tokens at the mask's targets."""
        target_encoder = self.target.encoder()
        if target_encoder is not None:  # the momentum copy: no gradient
            with torch.no_grad():
                _, tokens = target_encoder.tokens(clips)
        else:  # shared: the context encoder itself, with gradient
            _, tokens = self.context_encoder.tokens(clips)
        tokens = F.layer_norm(tokens, (tokens.shape[-1],))
        return [gather_tokens(tokens, mask.targets) for mask in masks]

    def predictions(self, clips: torch.Tensor, masks: Sequence[TubeMasks]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per mask (N, Kt, D) predictions, and the first mask's context tokens (N, Kc, D)."""
        grid = self.grid_of(clips)
        predicted, first_context = [], None
        for index, mask in enumerate(masks):
            _, context = self.context_encoder.tokens(clips, mask.context)
            first_context = context if first_context is None else first_context
            predicted.append(self.predictor(context, mask.context, mask.targets, grid, index))
        return predicted, first_context

    def forward(self, views: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> LearnerOutput:
        clips = views[0]
        return self.forward_masked(clips, self.sample_masks(clips, generator))

    def forward_masked(self, clips: torch.Tensor, masks: Sequence[TubeMasks]) -> LearnerOutput:
        """The loss for given masks (``forward`` draws them from the batch generator first)."""
        target = self.targets(clips, masks)
        predicted, context = self.predictions(clips, masks)
        rows = [z.reshape(-1, z.shape[-1]) for z in predicted] + [h.reshape(-1, h.shape[-1]) for h in target]
        return self.score(rows, None, context.mean(dim=1))


def tube_mask_configs(masks: Any, where: str) -> list[dict[str, Any]]:
    """``model.masks``: a list of tube-mask mappings (default: the official short- and long-range masks)."""
    if masks is None:
        return [dict(m) for m in OFFICIAL_MASKS]
    if isinstance(masks, Mapping) or not isinstance(masks, Sequence) or not masks:
        raise ConfigError(
            f"{where}.masks: expected a non-empty list of tube masks, e.g. `masks: [{{num_blocks: 8, spatial_scale: "
            f"[0.15, 0.15]}}, {{num_blocks: 2, spatial_scale: [0.7, 0.7]}}]`; got {masks!r}."
        )
    configs = []
    for index, mask in enumerate(masks):
        spec = sub_mapping({"mask": mask}, "mask", f"{where}.masks.{index}")
        check_section(spec, TUBE_MASK_KEYS, where, f"masks.{index}")
        for key in RANGE_KEYS:
            if key in spec:
                value = spec[key]
                numbers = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                if not numbers:
                    raise ConfigError(f"{where}.masks.{index}.{key}: expected [low, high], got {value!r}.")
                low, high = (float(v) for v in value)
                if not 0 < low <= high or (key != "aspect_ratio" and high > 1):
                    bound = "" if key == "aspect_ratio" else " <= 1"
                    raise ConfigError(f"{where}.masks.{index}.{key}: expected 0 < low <= high{bound}, got {value!r}.")
                spec[key] = (low, high)
        for key, low in (("num_blocks", 1), ("patience", 1), ("max_keep", 1)):
            value = spec.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise ConfigError(f"{where}.masks.{index}.{key}: expected an integer >= {low}, got {value!r}.")
        keep = spec.get("max_temporal_keep", 1.0)
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
            raise ConfigError(f"{where}.masks.{index}.max_temporal_keep: expected a fraction in (0, 1], got {keep!r}.")
        configs.append(spec)
    return configs


@register_architecture("vjepa")
def build_vjepa(
    *,
    objective: nn.Module,
    num_global: int,
    in_channels: int,
    location: str = "model",
    backbone: Mapping[str, Any] | None = None,
    token_predictor: Mapping[str, Any] | None = None,
    masks: Sequence[Mapping[str, Any]] | None = None,
    target_encoder: Mapping[str, Any] | str | None = None,
) -> VJEPA:
    """V-JEPA on a tubelet ViT (``backbone: {name: vit_tubelet, ...}``) with a momentum or shared target encoder."""
    from ebmssl.models import build_backbone

    where = location
    if backbone is None:
        raise ConfigError(
            f"{where}: no `backbone:`. Add a tubelet ViT, e.g. `backbone: {{name: vit_tubelet, num_frames: 8, "
            f"image_size: 32, patch_size: 4, tubelet_size: 2}}`."
        )
    spec = {"in_channels": in_channels, **dict(backbone)}
    encoder = build_backbone(spec, where=f"{where}.backbone")
    if not all(hasattr(encoder, name) for name in ("clip_grid", "tokens", "num_frames", "image_size")):
        raise ConfigError(
            f"{where}.backbone: {spec.get('name')!r} cannot encode a subset of the tubelets of a clip; V-JEPA needs a "
            f"clip token encoder: `{{name: vit_tubelet, ...}}`."
        )
    configs = tube_mask_configs(masks, where)
    expected = [[m, len(configs) + m] for m in range(len(configs))]
    pairs = getattr(objective, "pairs", None)
    if pairs is None or [list(map(int, p)) for p in pairs] != expected:
        raise ConfigError(
            f"{where}.masks: {len(configs)} mask(s) hand the objective views [predictions..., targets...]; set "
            f"`objective.pairs: {expected}` (got {pairs!r})."
        )
    predictor_spec = sub_mapping({"token_predictor": token_predictor}, "token_predictor", where)
    check_section(predictor_spec, PREDICTOR_KEYS, where, "token_predictor")
    default_target = {"momentum": 0.998, "final_momentum": 1.0}  # the official ema: [0.998, 1.0]
    target = build_target_encoder(
        target_encoder if target_encoder is not None else default_target, f"{where}.target_encoder", schedule="linear"
    )
    try:
        predictor = TubePredictor(encoder.output_dim, len(configs), **predictor_spec)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}.token_predictor: {error}.") from error
    grid = encoder.clip_grid(encoder.num_frames, encoder.image_size, encoder.image_size)
    for index, config in enumerate(configs):  # the lengths are a pure function of the grid and the config
        try:
            tube_mask_lengths(*grid, **{k: v for k, v in config.items() if k != "patience"})
        except ValueError as error:
            raise ConfigError(f"{where}.masks.{index}: {error}.") from error
    return VJEPA(encoder, predictor, objective, configs, target)
