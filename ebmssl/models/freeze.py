"""Per-head freeze schedules: a head's parameters receive no update while ``epoch < freeze_epochs``.

A schedule is declared on the module it freezes, never found by parameter name: any head spec accepts
``freeze_epochs`` (SwAV keeps its prototypes fixed for the first epoch:
``{name: prototypes, freeze_epochs: 1}``), and a head may set ``freeze_epochs`` on one of its own
submodules (the DINO head's ``freeze_last_layer_epochs``). Before every optimiser step the
architecture calls :func:`cancel_frozen_gradients`, which sets those parameters' gradients to ``None``
so the optimiser skips them (no update, no weight decay), as the official SwAV and DINO loops do.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from ebmssl.registry import ConfigError


def set_freeze_epochs(module: nn.Module, epochs: float, where: str = "model") -> nn.Module:
    """Declare that ``module``'s parameters stay fixed while the (fractional) epoch is below ``epochs``."""
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or epochs < 0:
        raise ConfigError(f"{where}: `freeze_epochs` expects a non-negative number of epochs, got {epochs!r}.")
    module.freeze_epochs = float(epochs)  # type: ignore[assignment]
    return module


def frozen_parameters(model: nn.Module, epoch: float) -> Iterator[nn.Parameter]:
    """Parameters of every submodule whose ``freeze_epochs`` is still ahead of ``epoch``."""
    seen: set[int] = set()
    for module in model.modules():
        if float(getattr(module, "freeze_epochs", 0.0) or 0.0) > epoch:
            for parameter in module.parameters():
                if id(parameter) not in seen:
                    seen.add(id(parameter))
                    yield parameter


def cancel_frozen_gradients(model: nn.Module, epoch: float) -> int:
    """Set the gradient of every frozen parameter to ``None``; returns how many were frozen."""
    count = 0
    for parameter in frozen_parameters(model, epoch):
        parameter.grad = None
        count += 1
    return count
