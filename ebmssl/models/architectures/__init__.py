"""Architectures: how a method's model is wired around its objective (``model.architecture``).

Every architecture subclasses :class:`ebmssl.models.architectures.base.Architecture` (the contract: see its
module docstring and docs/design.md) and is built by a keyword-only builder registered with
``@register_architecture(name)``: the ``model:`` section's keys are its arguments, checked by the registry,
plus ``objective``, ``num_global``, ``in_channels`` and ``location``. :func:`build_learner` dispatches on
``model.architecture`` and runs the collapse guard on whatever the builder returns.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from ebmssl._autoimport import import_submodules
from ebmssl.models.architectures.base import BUILD_CONTEXT, Architecture, LearnerOutput
from ebmssl.models.collapse_guard import check_collapse
from ebmssl.registry import ARCHITECTURES, ConfigError
from ebmssl.schema import check_keys

# keys of the `model:` section that are not the architecture's: the trainer's online probe switch
TRAINER_MODEL_KEYS = ("online_probe",)


def build_learner(
    model_config: Mapping[str, Any] | None,
    objective: nn.Module,
    num_global: int,
    in_channels: int,
    where: str = "model",
) -> nn.Module:
    """Build the method's architecture from the ``model:`` section and a built objective, then guard it.

    ``model.architecture`` names a registered architecture (default ``joint_embedding``); the section's
    other keys are the builder's keyword arguments (``online_probe`` excepted: it is the trainer's).
    """
    model_config = dict(model_config or {})
    builder = ARCHITECTURES.get(model_config.get("architecture", "joint_embedding"), where=f"{where}.architecture")
    source, _, section = where.rpartition(": ")
    keys = [name for name in inspect.signature(builder).parameters if name not in BUILD_CONTEXT]
    if not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(builder).parameters.values()):
        # the builder's keyword arguments are the section's keys: an unknown one is named with the closest
        check_keys(model_config, ("architecture", *keys, *TRAINER_MODEL_KEYS), f"{section or where}.", source or where)
    model_config = {k: v for k, v in model_config.items() if k not in TRAINER_MODEL_KEYS and not str(k).startswith("_")}
    name = model_config.pop("architecture", "joint_embedding")
    context = {"objective": objective, "num_global": int(num_global), "in_channels": int(in_channels), "location": where}
    architecture = ARCHITECTURES.build({"name": name, **model_config}, where, **context)
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

__all__ = ["Architecture", "LearnerOutput", "build_learner"]
