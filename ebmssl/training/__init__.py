"""Training: optimisers, schedules, the learner, the Accelerate loop, checkpoints and reports."""

from ebmssl.training import optim, schedules  # noqa: F401  (registers optimisers and schedules)
from ebmssl.training.learner import Learner, build_learner
from ebmssl.training.optim import LARS, build_optimizer, scaled_learning_rate

__all__ = ["LARS", "Learner", "build_learner", "build_optimizer", "scaled_learning_rate"]
