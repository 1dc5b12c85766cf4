"""One collapse guard over the whole method: the architecture and the objective together.

An energy that only pulls positive pairs together is minimised by mapping every input to one point.
A method needs at least one of three ways out (LeCun 2022, "A Path Towards Autonomous Machine
Intelligence", section 4.5; docs/design.md):

* contrastive: push the energy of negatives up (InfoNCE, queues);
* asymmetry: make the collapsed solution unreachable or unstable by the architecture (a predictor
  against a stop-gradient or momentum target) or by rewriting the targets (centering + sharpening);
* capacity: limit the volume of low energy (variance/covariance, redundancy, whitening, SIGReg).

The objective contributes its strategies' families (:meth:`Objective.collapse_families`); the
architecture contributes what its modules do (``collapse_mechanisms()``). Every architecture builder
is checked by :func:`check_collapse`, called from ``build_learner``.
"""

from __future__ import annotations

from typing import Any

from ebmssl.registry import ConfigError
from ebmssl.strategies.base import FAMILIES


def collapse_mechanisms(architecture: Any, objective: Any) -> list[tuple[str, str]]:
    """Every (family, reason) the method has: the architecture's, then the objective's."""
    model = list(getattr(architecture, "collapse_mechanisms", lambda: [])())
    return model + list(objective.collapse_families())


def check_collapse(architecture: Any, objective: Any, where: str = "model") -> list[tuple[str, str]]:
    """Refuse a method whose minimum is trivially collapsed, unless ``objective.allow_collapse`` is set.

    Returns the mechanisms found. An objective whose energy term is switched off (``energy_weight: 0``)
    has nothing pulling the views together and is not checked. ``architecture.collapse_notes()``
    (optional) explains why an asymmetry the model has does not count (a predictor against a target
    that receives gradient, a stop-gradient without a predictor).
    """
    mechanisms = collapse_mechanisms(architecture, objective)
    if getattr(objective, "allow_collapse", False) or float(getattr(objective, "energy_weight", 1.0)) == 0.0:
        return mechanisms
    if any(family in FAMILIES for family, _ in mechanisms):
        return mechanisms
    notes = list(getattr(architecture, "collapse_notes", lambda: [])())
    why = f" {' '.join(notes)}" if notes else ""
    source = getattr(objective, "source", "") or where
    raise ConfigError(
        f"{source}: the method pulls positive pairs together but nothing prevents collapse, so mapping every "
        f"input to one point minimises it.{why} Add one of the three ways out: contrastive negatives (e.g. "
        f"`{{name: infonce}}` under objective.strategies), architectural asymmetry (a `model.predictor` head "
        f"with `model.target: stop_gradient` or `model.target: {{name: ema, momentum: 0.99}}`), or latent-capacity "
        f"regularisation (e.g. `vicreg_variance`, `barlow_redundancy`, `sigreg` under objective.strategies). To "
        f"run it on purpose (a collapse experiment), set `objective.allow_collapse: true`."
    )
