"""Stop-gradient on the target branch (Chen & He 2021, "Exploring Simple Siamese Representation Learning")."""

from __future__ import annotations

from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Strategy, ViewBatch


def detach_targets(batch: ViewBatch) -> ViewBatch:
    """The batch with every target view detached from the graph."""
    return batch.replace(target=[view.detach() for view in batch.target])


@register_strategy("stop_gradient")
class StopGradient(Strategy):
    """Detaches the target views, so the energy only moves the online branch (SimSiam).

    SimSiam's loss is ``D(p1, sg(z2))/2 + D(p2, sg(z1))/2``: with a predictor on the online branch the
    stop-gradient makes the flat (collapsed) solution unstable (Chen & He 2021, official code
    github.com/facebookresearch/simsiam, main_simsiam.py: ``z1.detach()``, ``z2.detach()``).
    """

    family = "asymmetry"

    def transform(self, batch: ViewBatch) -> ViewBatch:
        return detach_targets(batch)
