"""ebmssl: self-supervised joint-embedding learning as an energy plus collapse prevention."""

from ebmssl import energies, strategies  # noqa: F401  (registers the built-in components)
from ebmssl.config import apply_overrides, load_config
from ebmssl.objective import Objective, ObjectiveOutput, build_objective
from ebmssl.registry import REGISTRIES, ConfigError
from ebmssl.strategies.base import Progress, Strategy, ViewBatch
from ebmssl.energies.base import Energy

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Energy",
    "Objective",
    "ObjectiveOutput",
    "Progress",
    "REGISTRIES",
    "Strategy",
    "ViewBatch",
    "apply_overrides",
    "build_objective",
    "load_config",
]
