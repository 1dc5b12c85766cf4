"""Optional extras (timm, transformers, huggingface_hub): import one, or say which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from torch import nn

from ebmssl.registry import ConfigError


def require(module: str, extra: str, what: str, where: str) -> ModuleType:
    """Import ``module``; when it is missing, a ConfigError naming ``extra`` (pyproject.toml's optional
    dependencies: ``timm``, ``hf``) and the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(
            f"{where}: {what} needs the optional extra `{extra}` ({module} cannot be imported: {error}). "
            f'Install it with `pip install "ebmssl[{extra}]"` (or `pip install {module}`).'
        ) from None


def prefers_channels_last(module: nn.Module) -> bool:
    """NHWC pays off for convolutional networks: more than the one patch-embedding convolution of a ViT."""
    return sum(isinstance(m, nn.Conv2d) for m in module.modules()) > 1
