"""Energies E(a, b): low for compatible (positive) pairs. Every module here registers itself."""

from ebmssl._autoimport import import_submodules
from ebmssl.energies.base import Energy

import_submodules(__name__)

__all__ = ["Energy"]
