"""Any timm model as a backbone, by name (``pip install "ebmssl[timm]"``; timm by Ross Wightman).

``backbone: {name: timm, model: convnext_atto}`` builds ``timm.create_model("convnext_atto", num_classes=0,
in_chans=<the views' channels>, **the other keys)``: every key besides ``model`` and ``pretrained`` is a
timm keyword argument (``img_size: 32, patch_size: 4, dynamic_img_size: true, drop_path_rate: 0.1``...).
The features are the model's pre-logits, ``forward_head(forward_features(x), pre_logits=True)`` (with no
classifier, which is what timm's ``forward`` then returns); their width (``output_dim``) is the model's
``head_hidden_size`` (``num_features`` where there is none), and ``prefers_channels_last`` is true for
convolutional networks (more than one ``Conv2d``), so nothing about the network is written twice.

``pretrained``: false (random init, the default except for a ``local-dir:`` folder); true: timm's pretrained weights, read from the local
Hugging Face cache only (as with ``HF_HUB_OFFLINE=1``: nothing is downloaded; without a local copy the
build is a ConfigError that says how to fetch it); or the path of a weights file (safetensors or a
torch checkpoint), loaded as timm loads its own (classifier dropped, the first convolution adapted to
``in_chans``). ``model: local-dir:/path`` loads a folder written by ``tools/export.py`` or timm's
``save_for_hf``.

Vision transformers (timm's ``VisionTransformer`` with a plain patch embedding, a ``token`` pool, or an
``avg`` pool with ``fc_norm: false``) are token encoders (:class:`TimmViTBackbone`): ``patch_size``, ``grid(h, w)``, ``tokens(x, keep)``
and ``pooled``, the contract the predictive architectures (MAE, I-JEPA, JEPA) and ``mask_views`` use.
The kept patches carry their own position embedding (added before the gather, resized to the input's
grid with ``dynamic_img_size: true``); class and register tokens are prepended after it.
For I-JEPA, which has no class token, write ``class_token: false, global_pool: avg, fc_norm: false``
(features: the mean of the final-normed patch tokens, as the built-in ``vit`` with ``pool: mean``).

The state dict keys are timm's under ``model.``; :meth:`TimmBackbone.library_state_dict` gives them
bare (what ``timm.create_model(name, num_classes=0, ...)`` loads strictly).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ebmssl.extras import prefers_channels_last, require
from ebmssl.registry import ConfigError, register_backbone

WHERE = "model.backbone"
TOKEN_POOLS = ("token", "avg")  # pools whose result follows from (class token, patch tokens) alone


class TimmBackbone(nn.Module):
    """A timm model without its classifier: images (N, C, H, W) -> pre-logits features (N, output_dim)."""

    def __init__(self, model: nn.Module, model_name: str, model_args: dict[str, Any], in_channels: int) -> None:
        super().__init__()
        self.model = model
        self.model_name = model_name
        self.model_args = dict(model_args)  # the timm keyword arguments it was built with (export rebuilds from them)
        self.in_channels = int(in_channels)
        self.output_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self.prefers_channels_last = prefers_channels_last(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """timm's ``forward_features`` (N, num_features, h, w) of a convolutional model (dense features);
        a ConfigError for models whose unpooled features are not a spatial map."""
        features = self.model.forward_features(x)
        if features.dim() != 4:
            raise ConfigError(
                f"eval.dense: timm model {self.model_name!r} returns unpooled features of shape {tuple(features.shape)}, "
                f"not a (N, C, h, w) map, and is not a token encoder (see is_token_encoder); it has no dense features. "
                f"Set `eval.dense: false` or use a CNN or a token-pool ViT."
            )
        return features

    def library_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under timm's own keys (``timm.create_model(model_name, num_classes=0, **model_args)``)."""
        return dict(self.model.state_dict())

    def library_config(self) -> dict[str, Any]:
        """How to build the bare timm model that :meth:`library_state_dict` loads into."""
        return {
            "library": "timm", "architecture": self.model_name, "num_classes": 0,
            "model_args": {**self.model_args, "in_chans": self.in_channels}, "in_chans": self.in_channels,
            "num_features": self.output_dim,
        }  # fmt: skip


class TimmViTBackbone(TimmBackbone):
    """A timm VisionTransformer that also encodes a kept subset of its patches (the token-encoder contract)."""

    def __init__(self, model: nn.Module, model_name: str, model_args: dict[str, Any], in_channels: int) -> None:
        super().__init__(model, model_name, model_args, in_channels)
        patch = tuple(model.patch_embed.patch_size)
        if patch[0] != patch[1]:
            raise ConfigError(f"{WHERE}: {model_name} has non-square patches {patch}; token masking needs square ones.")
        self.patch_size = int(patch[0])
        self.pool = "cls" if model.global_pool == "token" else "mean"

    def grid(self, image_height: int, image_width: int) -> tuple[int, int]:
        """Patch grid (rows, columns) of an image of this size."""
        embed = self.model.patch_embed
        if getattr(self.model, "dynamic_img_size", False):
            rows, columns = embed.dynamic_feat_size((image_height, image_width))
            return int(rows), int(columns)
        return int(embed.grid_size[0]), int(embed.grid_size[1])

    def tokens(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(class token (N, D) or None, patch tokens (N, K, D)), final-normed; only the patches at ``keep``.

        ``keep``: (N, K) int64 patch indices in row-major grid order, or None for all of them. timm's
        ``_pos_embed`` adds the (resized) position embedding and prepends the class/register tokens; the
        kept patches are gathered after it, so each keeps its own position.
        """
        model = self.model
        prefix = int(model.num_prefix_tokens)
        x = model._pos_embed(model.patch_embed(x))
        if keep is not None:
            if keep.dim() != 2 or keep.shape[0] != x.shape[0]:
                raise ValueError(f"keep must be (N, K) patch indices for N = {x.shape[0]}, got shape {tuple(keep.shape)}")
            patches = torch.gather(x[:, prefix:], 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
            x = torch.cat([x[:, :prefix], patches], dim=1)
        x = model.norm(model.blocks(model.norm_pre(model.patch_drop(x))))
        cls = x[:, 0] if model.has_class_token else None
        return cls, x[:, prefix:]

    def pooled(self, cls: torch.Tensor | None, patches: torch.Tensor) -> torch.Tensor:
        """timm's pre-logits of :meth:`tokens`' output: the class token or the mean patch token, then fc_norm."""
        pooled = cls if self.model.global_pool == "token" else patches.mean(dim=1)
        return self.model.head_drop(self.model.fc_norm(pooled))

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        return self.pooled(*self.tokens(x, keep))


def is_token_encoder(model: nn.Module) -> bool:
    """A timm ViT whose patch tokens we can encode a subset of: plain patch embedding, absolute positions,
    a pool computed from the class token or the patch tokens alone, and the final norm on every token
    (timm's ``avg`` pool normalises only the pooled vector unless ``fc_norm: false``; MAE and I-JEPA need
    normalised tokens, and an fc_norm the loss never reaches would be a parameter without a gradient)."""
    from timm.layers import PatchEmbed
    from timm.models.vision_transformer import VisionTransformer

    return (
        isinstance(model, VisionTransformer)
        and type(model.patch_embed) is PatchEmbed
        and getattr(model, "attn_pool", None) is None
        and model.global_pool in TOKEN_POOLS
        and not (model.global_pool == "avg" and getattr(model, "pool_include_prefix", False))
        and isinstance(model.fc_norm, nn.Identity)
    )


def unknown_model(timm: Any, name: str) -> ConfigError:
    matches = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.5)
    hint = f"Close matches: {', '.join(matches)}." if matches else "No close match."
    return ConfigError(
        f"{WHERE}.model: timm has no model {name!r}. {hint} `python -c \"import timm; print(timm.list_models('*vit*'))\"` "
        f"lists them (a pattern narrows the list)."
    )


def cached_weights(timm: Any, name: str) -> str:
    """The local copy of timm's pretrained weights for ``name`` (the Hugging Face cache, or the file its
    pretrained config names); a ConfigError saying how to fetch them when there is none."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise ConfigError(f"{WHERE}.pretrained: timm has no pretrained weights for {name!r}. Use `pretrained: false`.")
    if cfg.file and Path(cfg.file).is_file():
        return str(cfg.file)
    hub_id = cfg.hf_hub_id
    if hub_id:
        hub = require("huggingface_hub", "hf", "reading timm weights from the local hub cache", f"{WHERE}.pretrained")
        repo, _, revision = hub_id.partition("@")
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in names:
            path = hub.try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(path, str):
                return path
    source = f"the Hugging Face repository {hub_id!r}" if hub_id else f"{cfg.url or 'its download URL'}"
    fetch = f"`hf download {hub_id.partition('@')[0]}`" if hub_id else "downloading the file"
    raise ConfigError(
        f"{WHERE}.pretrained: no local copy of the pretrained weights of {name!r} (from {source}); ebmssl never "
        f"downloads at run time (as with HF_HUB_OFFLINE=1). Fetch them once on a machine with network access, e.g. "
        f"{fetch} (it fills the Hugging Face cache, $HF_HOME), or set `pretrained:` to the path of the weights file; "
        f"`pretrained: false` trains from random init."
    )


@register_backbone("timm")
def timm_backbone(model: str, in_channels: int = 3, pretrained: bool | str | None = None, **timm_kwargs: Any) -> TimmBackbone:
    """Any timm model by name (``model: resnet50``), pre-logits features; other keys are timm's keyword arguments."""
    timm = require("timm", "timm", "`backbone: {name: timm}`", WHERE)
    for key, fix in (("in_chans", "the views' channels are used (`to_rgb: true` makes 3)"),
                     ("num_classes", "the classifier is always removed (features are the pre-logits)"),
                     ("pretrained_cfg_overlay", "use `pretrained: <path of a weights file>`")):
        if key in timm_kwargs:
            raise ConfigError(f"{WHERE}: remove `{key}:`; {fix}.")
    name = str(model)
    if name.startswith("local-dir:"):
        if not (Path(name[len("local-dir:"):]) / "config.json").is_file():
            raise ConfigError(f"{WHERE}.model: {name!r} is not a folder with a config.json (as tools/export.py writes).")
        pretrained = True if pretrained is None else pretrained  # the folder's weights unless told otherwise
    elif ":" in name:
        raise ConfigError(
            f"{WHERE}.model: {name!r}: ebmssl reads no hub id at run time; download the repository once "
            f"(`hf download {name.partition(':')[2]} --local-dir DIR`) and write `model: local-dir:DIR`."
        )
    elif not timm.is_model(name):
        raise unknown_model(timm, name)
    pretrained = bool(pretrained) if not isinstance(pretrained, str) else pretrained
    options: dict[str, Any] = {}
    if isinstance(pretrained, str):
        if not Path(pretrained).is_file():
            raise ConfigError(f"{WHERE}.pretrained: no weights file at {pretrained!r}. Give an existing file, true or false.")
        options = {"pretrained_cfg_overlay": {"file": str(pretrained)}}
    elif pretrained and not name.startswith("local-dir:"):
        options = {"pretrained_cfg_overlay": {"file": cached_weights(timm, name)}}
    try:
        network = timm.create_model(name, pretrained=bool(pretrained), num_classes=0, in_chans=int(in_channels),
                                    **timm_kwargs, **options)
    except (TypeError, ValueError, AssertionError, KeyError) as error:
        raise ConfigError(
            f"{WHERE}: timm.create_model({name!r}, ...) rejected the arguments {timm_kwargs!r}: "
            f"{error or type(error).__name__} (an image size it cannot take?). The keys besides `model` and "
            f"`pretrained` go to timm unchanged."
        ) from error
    if name.startswith("local-dir:"):
        name = str(network.pretrained_cfg.get("architecture", name))
    kind = TimmViTBackbone if is_token_encoder(network) else TimmBackbone
    return kind(network, name, timm_kwargs, in_channels)
