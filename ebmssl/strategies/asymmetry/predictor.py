"""Predictor head on the online branch (BYOL, Grill et al. 2020; SimSiam, Chen & He 2021)."""

from __future__ import annotations

from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Strategy


@register_strategy("predictor")
class Predictor(Strategy):
    """Marker: the online branch ends with a predictor head q, so the energy compares q(z_online) with z_target.

    The objective itself does nothing here (no transform, no loss term): the trainer builds the head
    from the method config's ``model.predictor`` spec and applies it to the online views before
    calling the objective, with the target views taken before the predictor (``model.target: online``)
    or from the EMA branch (``model.target: ema``). Listing ``predictor`` under ``strategies`` states
    the asymmetry in the method's definition and lets the trainer check that ``model.predictor`` is
    set. A predictor alone does not prevent collapse: combine it with ``stop_gradient`` (SimSiam) or
    ``ema_target`` (BYOL).
    """

    family = "asymmetry"

    def __init__(self) -> None:
        super().__init__()
