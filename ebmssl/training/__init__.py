"""Training: optimisers, schedules, the Accelerate loop, checkpoints and reports (the learner is built by
:func:`ebmssl.models.architectures.build_learner`)."""

from ebmssl.training import optim, schedules  # noqa: F401  (registers optimisers and schedules)
from ebmssl.training.optim import LARS, build_optimizer, scaled_learning_rate

__all__ = ["LARS", "build_optimizer", "scaled_learning_rate"]
