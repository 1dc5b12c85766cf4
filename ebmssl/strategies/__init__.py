"""Collapse-prevention strategies: contrastive negatives, architectural asymmetry, capacity limits."""

from ebmssl._autoimport import import_submodules
from ebmssl.strategies.base import Progress, Strategy, ViewBatch

import_submodules(__name__)

__all__ = ["Progress", "Strategy", "ViewBatch"]
