"""Hugging Face transformers vision models as backbones (``pip install "ebmssl[hf]"``).

``backbone: {name: hf, model: <local folder or hub id>}`` loads ``transformers.AutoModel`` with its
weights from a folder (``save_pretrained``'s) or from the local hub cache only (``local_files_only``, as
with ``HF_HUB_OFFLINE=1``: nothing is downloaded; a hub id with no local copy is a ConfigError that says
how to fetch it). ``pretrained: false`` builds the same architecture with random weights. ``config:
{model_type: vit, hidden_size: 192, ...}`` builds a model from configuration keys alone (random init;
with ``model:`` too, they override the loaded configuration and need ``pretrained: false``).

Features (``pool``): ``cls``, the final-normed class token (``last_hidden_state[:, 0]``); ``pooler``, the
model's ``pooler_output`` (the global average pool of the convolutional and Swin models); ``mean``, the
mean of the last hidden state over tokens or positions; ``auto`` (default) is ``cls`` for models with a
class token (ViT, DeiT, DINOv2, BEiT...) and ``pooler`` otherwise. The width (``output_dim``), channels
(``num_channels``, which must equal the views' for pretrained weights) and the channels-last preference
(more than one ``Conv2d``) are read from the model. ViT-like models get ``interpolate_pos_encoding=True``
so images of another size than the configuration's use resized position embeddings.
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ebmssl.extras import prefers_channels_last, require
from ebmssl.registry import ConfigError, register_backbone

WHERE = "model.backbone"
POOLS = ("auto", "cls", "pooler", "mean")


class HFBackbone(nn.Module):
    """A transformers ``AutoModel`` returning one feature vector per image (N, output_dim)."""

    def __init__(self, model: nn.Module, pool: str, in_channels: int, source: str) -> None:
        super().__init__()
        config = model.config
        has_cls = any(name.endswith("cls_token") for name, _ in model.named_parameters())
        self.pool = ("cls" if has_cls else "pooler") if pool == "auto" else pool
        if self.pool == "cls" and not has_cls:
            raise ConfigError(f"{WHERE}.pool: {type(model).__name__} has no class token; use `pool: pooler` or `mean`.")
        if self.pool != "pooler" and getattr(model, "pooler", None) is not None:
            model.pooler = None  # unused (and, under DDP, a parameter without a gradient)
        self.model = model
        self.source = source
        sizes = getattr(config, "hidden_sizes", None)
        self.output_dim = int(sizes[-1] if sizes and not has_cls else config.hidden_size)
        self.in_channels = int(in_channels)
        self.prefers_channels_last = prefers_channels_last(model)
        self._interpolate = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extra = {"interpolate_pos_encoding": True} if self._interpolate else {}
        outputs = self.model(pixel_values=x, return_dict=True, **extra)
        if self.pool == "pooler":
            return outputs.pooler_output.flatten(1)
        hidden = outputs.last_hidden_state
        if self.pool == "cls":
            return hidden[:, 0]
        return hidden.mean(dim=1) if hidden.dim() == 3 else hidden.flatten(2).mean(dim=2)

    def library_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under transformers' keys (what ``AutoModel.from_pretrained`` of a saved folder loads)."""
        return dict(self.model.state_dict())

    def library_config(self) -> dict[str, Any]:
        return {
            "library": "transformers", "architecture": type(self.model).__name__, "model_type": self.model.config.model_type,
            "in_chans": self.in_channels, "num_features": self.output_dim, "pool": self.pool,
        }  # fmt: skip


def local_copy(hub: Any, model: str) -> str:
    """``model`` as a folder, or the hub id when its config is in the local cache; else a ConfigError."""
    if Path(model).is_dir():
        if not (Path(model) / "config.json").is_file():
            raise ConfigError(f"{WHERE}.model: the folder {model!r} has no config.json (write it with save_pretrained).")
        return model
    if Path(model).exists() or model.count("/") > 1 or model.startswith((".", "/", "~")):
        raise ConfigError(f"{WHERE}.model: {model!r} is neither a model folder nor a hub id (owner/name).")
    repo, _, revision = model.partition("@")
    found = hub.try_to_load_from_cache(repo, "config.json", revision=revision or None)
    if not isinstance(found, str):
        raise ConfigError(
            f"{WHERE}.model: no local copy of the hub model {model!r}; ebmssl never downloads at run time (as with "
            f"HF_HUB_OFFLINE=1). Fetch it once on a machine with network access: `hf download {repo}` (fills the "
            f"Hugging Face cache, $HF_HOME) or `hf download {repo} --local-dir DIR` and write `model: DIR`."
        )
    return model


@register_backbone("hf")
def hf_backbone(
    model: str | None = None,
    in_channels: int = 3,
    pretrained: bool = True,
    config: dict | None = None,
    pool: str = "auto",
) -> HFBackbone:
    """A transformers vision model (AutoModel) from a local folder, the local hub cache, or ``config:`` keys."""
    transformers = require("transformers", "hf", "`backbone: {name: hf}`", WHERE)
    if pool not in POOLS:
        raise ConfigError(f"{WHERE}.pool: {pool!r} is not one of {', '.join(POOLS)}.")
    if model is None and not config:
        raise ConfigError(f"{WHERE}: give `model:` (a local folder or hub id) or `config:` (e.g. {{model_type: vit, ...}}).")
    overrides = dict(config or {})
    if model is not None and overrides and pretrained:
        raise ConfigError(f"{WHERE}: `config:` changes the architecture, so the weights cannot load; add `pretrained: false`.")
    try:
        if model is not None:
            hub = require("huggingface_hub", "hf", "`backbone: {name: hf}`", WHERE)
            source = local_copy(hub, str(model))
            settings = transformers.AutoConfig.from_pretrained(source, local_files_only=True)
            for key, value in overrides.items():
                setattr(settings, key, value)
        else:
            source = "config"
            known = list(transformers.CONFIG_MAPPING.keys())
            if overrides.get("model_type") not in known:
                close = difflib.get_close_matches(str(overrides.get("model_type")), known, n=5)
                raise ConfigError(
                    f"{WHERE}.config.model_type: {overrides.get('model_type')!r} is not a transformers model type "
                    f"(close matches: {', '.join(close) or 'none'}); e.g. vit, convnext, dinov2, swin."
                )
            settings = transformers.AutoConfig.for_model(**overrides)
        channels = getattr(settings, "num_channels", None)
        if model is not None and pretrained:
            if channels is not None and int(channels) != int(in_channels):
                raise ConfigError(
                    f"{WHERE}: {model!r} takes {channels}-channel images but the views produce {in_channels}; "
                    f"set `to_rgb: true` in the views (or `pretrained: false` to train it from scratch)."
                )
            network = transformers.AutoModel.from_pretrained(source, local_files_only=True)
        else:
            if channels is not None:
                settings.num_channels = int(in_channels)
            network = transformers.AutoModel.from_config(settings)
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{WHERE}: transformers could not build {model or overrides!r}: {error}") from error
    if not (hasattr(network.config, "hidden_size") or getattr(network.config, "hidden_sizes", None)):
        raise ConfigError(f"{WHERE}: {model or overrides!r} is not a transformers vision model (no hidden size).")
    return HFBackbone(network, pool, in_channels, source)
