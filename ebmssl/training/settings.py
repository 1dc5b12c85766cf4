"""The ``train:`` and ``eval:`` sections of a run config resolved over their defaults (kept in ebmssl/schema.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ebmssl.registry import ConfigError
from ebmssl.schema import EVAL_DEFAULTS, TRAIN_DEFAULTS, check_keys

__all__ = ["EVAL_DEFAULTS", "TRAIN_DEFAULTS", "resolve_section"]

TRAIN_KEYS, EVAL_KEYS = tuple(TRAIN_DEFAULTS), tuple(EVAL_DEFAULTS)


def resolve_section(config: Mapping[str, Any], key: str, defaults: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``defaults`` overlaid with ``config[key]``; an unknown key is a ConfigError (see :func:`check_keys`)."""
    section = config.get(key) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{source}: `{key}:` must be a mapping of keys, got {section!r}. Write `{key}: {{...}}`.")
    check_keys(section, defaults, f"{key}.", source)
    return {**defaults, **section}
