"""Factories for backbones and (chains of) heads, with the registry's explained errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ebmssl.models.freeze import set_freeze_epochs
from ebmssl.registry import BACKBONES, HEADS, ConfigError


def _check_output_dim(module: Any, kind: str, name: str, where: str) -> None:
    if not isinstance(module, nn.Module) or not isinstance(getattr(module, "output_dim", None), int):
        raise ConfigError(
            f"{where}: {kind} {name!r} built {type(module).__name__}, which is not an nn.Module with an int "
            f"`output_dim` attribute. Registered {kind}s must set `self.output_dim` (the size of their output)."
        )


def _spec_name(spec: Any) -> str:
    return spec if isinstance(spec, str) else str(spec.get("name", "?")) if isinstance(spec, Mapping) else "?"


def build_backbone(spec: Mapping[str, Any] | str, where: str = "model.backbone") -> nn.Module:
    """Build a registered backbone from ``{"name": ..., **kwargs}`` (or a bare name)."""
    backbone = BACKBONES.build(spec, where)
    _check_output_dim(backbone, "backbone", _spec_name(spec), where)
    return backbone


def build_model_backbone(model_config: Mapping[str, Any] | None, in_channels: int, where: str = "model") -> nn.Module:
    """The backbone of a method's ``model:`` section, for inputs with ``in_channels`` channels.

    The one place a backbone is built from a config (training, the random-init baseline, offline
    evaluation). ``in_channels`` is the view pipeline's ``channels`` (3 for a grayscale dataset with
    ``to_rgb: true``), never the dataset's, so every caller agrees.
    """
    model_config = model_config or {}
    if "backbone" not in model_config:
        raise ConfigError(f"{where}: no `backbone:`. Add e.g. `backbone: {{name: resnet18, small_images: true}}`.")
    spec = model_config["backbone"]
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    if "in_channels" in spec and int(spec["in_channels"]) != int(in_channels):
        raise ConfigError(
            f"{where}.backbone: in_channels={spec['in_channels']} but the view pipeline produces {in_channels} "
            f"channel(s). Remove `in_channels:` (it is taken from the views; `to_rgb: true` makes 3)."
        )
    spec["in_channels"] = int(in_channels)
    return build_backbone(spec, f"{where}.backbone")


def random_init_backbone(model_config: Mapping[str, Any] | None, in_channels: int, seed: int, where: str = "model") -> nn.Module:
    """A freshly initialised backbone (seeded, global RNG untouched): the random-init baseline.

    A backbone that can load pretrained weights (timm, hf: a ``pretrained`` argument) is built with
    ``pretrained: false``, so the baseline is the architecture at random init whatever the run started from.
    """
    model_config = dict(model_config or {})
    spec = model_config.get("backbone")
    if isinstance(spec, Mapping) and spec.get("name") in BACKBONES:
        import inspect

        factory = BACKBONES.get(spec["name"])
        if "pretrained" in inspect.signature(factory.__init__ if inspect.isclass(factory) else factory).parameters:
            model_config["backbone"] = {**spec, "pretrained": False}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build_model_backbone(model_config, in_channels, where)


@torch.no_grad()
def check_backbone_input(backbone: nn.Module, channels: int, sizes: Sequence[int], where: str = "model.backbone") -> None:
    """Run ``backbone`` once on two blank images of each size (eval mode, then its mode restored): a size it
    cannot take (too small for its downsampling, a fixed ViT input size) is a ConfigError here, before training,
    not an error inside the first step."""
    was_training = backbone.training
    backbone.eval()
    # a clip encoder (`is_clip_encoder`) takes clips (N, T, C, H, W): its own `num_frames`, else 2 frames
    frames = (getattr(backbone, "num_frames", None) or 2) if getattr(backbone, "is_clip_encoder", False) else None
    try:
        for size in dict.fromkeys(int(s) for s in sizes):
            try:
                shape = (int(channels), size, size) if frames is None else (int(frames), int(channels), size, size)
                out = backbone(torch.zeros(2, *shape))
            except (RuntimeError, AssertionError, ValueError) as error:
                detail = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise ConfigError(
                    f"{where}: {type(backbone).__name__} cannot encode the {channels}x{size}x{size} views ({detail}). "
                    f"Use views of a size the model takes, or configure the model for them (timm: `img_size: {size}` "
                    f"or `dynamic_img_size: true`; convolutional networks need enough pixels for their downsampling)."
                ) from None
            if out.dim() != 2 or out.shape[1] != backbone.output_dim:
                raise ConfigError(
                    f"{where}: {type(backbone).__name__} returned shape {tuple(out.shape)} for {size}x{size} views; "
                    f"a backbone returns (N, output_dim={backbone.output_dim})."
                )
    finally:
        backbone.train(was_training)


def build_head(spec: Mapping[str, Any] | str, input_dim: int, where: str = "model.head") -> nn.Module:
    """Build one registered head; ``input_dim`` is passed as a keyword and must not appear in ``spec``.

    Every head accepts ``freeze_epochs`` (see :mod:`ebmssl.models.freeze`): its parameters stay fixed
    while the epoch is below it.
    """
    if isinstance(spec, Mapping) and "input_dim" in spec:
        raise ConfigError(
            f"{where}: remove `input_dim:` from the head mapping {dict(spec)!r}; it is taken from the previous "
            f"module's output_dim ({input_dim})."
        )
    freeze_epochs = None
    if isinstance(spec, Mapping) and "freeze_epochs" in spec:
        spec = dict(spec)
        freeze_epochs = spec.pop("freeze_epochs")
    head = HEADS.build(spec, where, input_dim=int(input_dim))
    _check_output_dim(head, "head", _spec_name(spec), where)
    if freeze_epochs is not None:
        set_freeze_epochs(head, freeze_epochs, where)
    return head


class IdentityHead(nn.Identity):
    """Returns its input unchanged; ``output_dim == input_dim``."""

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.input_dim = int(input_dim)
        self.output_dim = int(input_dim)


class HeadChain(nn.Sequential):
    """Heads applied in sequence; ``output_dim`` is the last head's (or ``input_dim`` when empty)."""

    def __init__(self, heads: Sequence[nn.Module], input_dim: int) -> None:
        super().__init__(*heads)
        self.input_dim = int(input_dim)
        self.output_dim = int(heads[-1].output_dim) if heads else int(input_dim)


def build_heads(
    spec_or_list: Mapping[str, Any] | str | Sequence[Any] | None, input_dim: int, where: str = "model.head"
) -> nn.Module:
    """Build one head, or a list of heads chained in sequence; ``None`` or ``[]`` gives the identity."""
    if spec_or_list is None:
        return IdentityHead(input_dim)
    if isinstance(spec_or_list, (str, Mapping)):
        return build_head(spec_or_list, input_dim, where)
    if not isinstance(spec_or_list, Sequence):
        raise ConfigError(
            f"{where}: expected a head mapping, a list of head mappings, or null; got {spec_or_list!r} "
            f"({type(spec_or_list).__name__}). Write e.g. `{{name: mlp, hidden_dim: 2048, output_dim: 128}}`."
        )
    if len(spec_or_list) == 0:
        return IdentityHead(input_dim)
    if len(spec_or_list) == 1:
        return build_head(spec_or_list[0], input_dim, f"{where}[0]")
    heads: list[nn.Module] = []
    dim = int(input_dim)
    for index, spec in enumerate(spec_or_list):
        head = build_head(spec, dim, f"{where}[{index}]")
        heads.append(head)
        dim = head.output_dim
    return HeadChain(heads, input_dim)
