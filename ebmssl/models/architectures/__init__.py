"""Architectures: how a method's model is wired around its objective (``model.architecture``).

Every architecture is a builder registered with ``@register_architecture(name)`` and the signature
``(model_config, objective, num_global, in_channels, num_classes, where)``; it returns an ``nn.Module``
offering the contract the trainer relies on (see :class:`ebmssl.models.architectures.joint_embedding.Learner`
and docs/design.md): ``forward(views, labels=None, generator=None) -> LearnerOutput``, ``encoder``,
``embed(views)``, ``objective``, ``before_optimizer_step(progress)``, ``after_optimizer_step(progress)``,
and ``collapse_mechanisms() -> list[(family, reason)]`` for the collapse guard, which
:func:`build_learner` runs on every architecture it builds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from ebmssl._autoimport import import_submodules
from ebmssl.models.collapse_guard import check_collapse
from ebmssl.registry import ARCHITECTURES, ConfigError


def build_learner(
    model_config: Mapping[str, Any] | None,
    objective: nn.Module,
    num_global: int,
    in_channels: int,
    num_classes: int | None,
    where: str = "model",
) -> nn.Module:
    """Build the method's architecture from the ``model:`` section and a built objective, then guard it.

    ``model.architecture`` names a registered architecture (default ``joint_embedding``).
    """
    model_config = dict(model_config or {})
    name = str(model_config.pop("architecture", "joint_embedding"))
    builder = ARCHITECTURES.get(name, where=f"{where}.architecture")
    architecture = builder(model_config, objective, num_global, in_channels, num_classes, where)
    patch_terms = list(getattr(objective, "patch_term_names", []))
    if patch_terms and not getattr(architecture, "feeds_tokens", False):
        raise ConfigError(
            f"{where}.architecture: objective.patch_terms ({', '.join(patch_terms)}) compare token sets, but the "
            f"{name!r} architecture passes the objective no `tokens=`. Use an architecture that feeds patch tokens "
            f"(`feeds_tokens = True`; see docs/design.md, \"Energies over token sets\"), or remove `patch_terms:`."
        )
    check_collapse(architecture, objective, where)
    return architecture


import_submodules(__name__)

__all__ = ["build_learner"]
