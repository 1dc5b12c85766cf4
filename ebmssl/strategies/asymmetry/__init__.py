"""Asymmetry collapse-prevention strategies that act on the objective's inputs (DINO's centering).

The architectural asymmetries are model components, not strategies: the predictor is a head
(``model.predictor``), the stop-gradient and the momentum (EMA) branch are target branches
(``model.target``, :mod:`ebmssl.models.target`).
"""

from ebmssl.registry import STRATEGIES

STRATEGIES.retire(
    "predictor",
    "the predictor is a head of the model now. Set `model.predictor: {name: mlp, hidden_dim: 4096, output_dim: 256}` "
    "and remove `predictor` from objective.strategies.",
)
STRATEGIES.retire(
    "stop_gradient",
    "the stop-gradient is a target branch now. Set `model.target: stop_gradient` and remove it from objective.strategies.",
)
STRATEGIES.retire(
    "ema_target",
    "the momentum target is a target branch now. Move its arguments to `model.target: {name: ema, momentum: 0.99, "
    "final_momentum: 1.0, schedule: cosine}` and remove it from objective.strategies.",
)
