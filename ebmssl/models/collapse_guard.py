"""One collapse guard over the whole method: the architecture and the objective together.

An energy that only pulls positive pairs together is minimised by mapping every input to one point.
A method needs at least one of three ways out (LeCun 2022, "A Path Towards Autonomous Machine
Intelligence", section 4.5; docs/design.md):

* contrastive: push the energy of negatives up (InfoNCE, queues);
* asymmetry: make the collapsed solution unreachable or unstable by the architecture (a predictor
  against a stop-gradient or momentum target) or by rewriting the targets (centering + sharpening);
* capacity: limit the volume of low energy (variance/covariance, redundancy, whitening, SIGReg).

The objective contributes its strategies' families (:meth:`Objective.collapse_families`); the
architecture contributes what its modules do (``collapse_mechanisms()``). A latent-variable model has a
second collapse of its own, in z (:func:`check_latent_capacity`): its capacity limit is reported as
``latent_capacity`` and does not count against representation collapse. Every architecture builder
is checked by :func:`check_collapse`, called from ``build_learner``.
"""

from __future__ import annotations

from typing import Any

from ebmssl.registry import ConfigError
from ebmssl.strategies.base import FAMILIES

# what a latent variable's capacity limit reports: a guard against latent collapse (a z that copies the target), not a
# way out of representation collapse (an encoder mapping everything to one point leaves nothing for z to carry)
LATENT_CAPACITY = "latent_capacity"


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
    check_latent_capacity(architecture, objective, where)
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


def check_latent_capacity(architecture: Any, objective: Any, where: str = "model") -> None:
    """Refuse a latent variable z with no capacity limit (``architecture.unlimited_latent()`` gives the reason).

    The latent form of collapse (LeCun 2022, section 4.5; docs/latent_variable.md): a z that can carry
    anything copies the target, so every target, plausible or not, gets low energy, whatever keeps the
    representations themselves apart. Representation collapse is checked by :func:`check_collapse`; this
    needs a capacity term on z itself.
    """
    reason = getattr(architecture, "unlimited_latent", lambda: None)()
    if not reason:
        return
    source = getattr(objective, "source", "") or where
    raise ConfigError(
        f"{source}: {reason}, so z can copy the target and every future gets low energy (latent collapse). "
        f"Limit it: set `model.latent.beta` above 0 (e.g. 0.1) with `gaussian_kl` or `l1_sparsity`, or use "
        f"`model.latent.regulariser: {{name: noisy_bottleneck}}`, or `model.latent.latent_dim: 0` (no latent). "
        f"To run the unlimited latent on purpose (a baseline), set `objective.allow_collapse: true`."
    )
