"""Optional extras (timm, transformers, huggingface_hub): import one, or say which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from ebmssl.registry import ConfigError

# extra name (pyproject.toml [project.optional-dependencies]) -> the modules it provides
EXTRAS: dict[str, tuple[str, ...]] = {"timm": ("timm",), "hf": ("transformers", "huggingface_hub")}


def require(module: str, extra: str, what: str, where: str) -> ModuleType:
    """Import ``module``; when it is missing, a ConfigError naming ``extra`` and the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(
            f"{where}: {what} needs the optional extra `{extra}` ({module} cannot be imported: {error}). "
            f'Install it with `pip install "ebmssl[{extra}]"` (or `pip install {module}`).'
        ) from None


def count_convolutions(module: "object") -> int:
    """How many 2-D convolutions a network holds (a ViT has one, its patch embedding)."""
    from torch import nn

    return sum(isinstance(m, nn.Conv2d) for m in module.modules())  # type: ignore[attr-defined]


def prefers_channels_last(module: "object") -> bool:
    """NHWC pays off for convolutional networks: more than the single patch-embedding convolution of a ViT."""
    return count_convolutions(module) > 1
