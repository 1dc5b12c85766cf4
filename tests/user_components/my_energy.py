"""A user's own components, registered from OUTSIDE the ebmssl package.

This module is what a user writes next to their YAML: it is imported because the config lists it
under ``imports:`` (the config's directory is on the import path), and its decorators register an
energy and a strategy that the YAML then names. Nothing in the framework changes. The registry-wide
property tests in ``tests/properties`` also pick these components up (they import this module), so a
user component is held to the same collapse invariants as the built-in ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ebmssl import distributed
from ebmssl.energies.base import Energy
from ebmssl.registry import register_energy, register_strategy
from ebmssl.strategies.base import Strategy, ViewBatch


@register_energy("user_scaled_cosine")
class UserScaledCosine(Energy):
    """A user energy: scaled negative cosine, E(a, b) = -scale * cos(a, b) / T (``scale`` is required).

    Scale- and rotation-invariant like the built-in cosine energy, and minimal (-scale / T) when the two
    embeddings point the same way.
    """

    example_config = {"scale": 2.0}
    scale_invariant = True
    minimal_on_identical = True

    def __init__(self, scale: float, temperature: float = 1.0) -> None:
        super().__init__()
        if scale <= 0 or temperature <= 0:
            raise ValueError(f"scale and temperature must be positive, got {scale} and {temperature}")
        self.scale = scale
        self.temperature = temperature

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        return -self.scale * (a @ b.T) / self.temperature

    def aligned(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        return -self.scale * (a * b).sum(-1) / self.temperature


def log_volume(z: torch.Tensor, eps: float) -> torch.Tensor:
    """(1/D) log det(Cov(z) + eps I) over the rows of z (N, D), via the eigenvalues of the covariance.

    Eigenvalues (clamped at 0) rather than a Cholesky factor keep it finite for rank-deficient batches.
    """
    z = z.double()
    centered = z - z.mean(dim=0, keepdim=True)
    covariance = centered.T @ centered / max(z.shape[0] - 1, 1)
    eigenvalues = torch.linalg.eigvalsh(covariance).clamp_min(0.0)
    return torch.log(eigenvalues + eps).mean()


@register_strategy("user_spread")
class UserSpread(Strategy):
    """A user capacity term: minus the log-volume of the embeddings, -(1/D) log det(Cov(z) + eps I).

    Large when the batch collapses to a point or a low-dimensional subspace (small eigenvalues), small
    when the embeddings fill the space (a Gaussian-entropy / coding-rate style regulariser). Statistics
    over the gathered batch, averaged over the online views.
    """

    family = "capacity"
    example_config = {"eps": 1e-3}

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.eps = eps

    def loss(self, batch: ViewBatch, energy: torch.nn.Module) -> torch.Tensor:
        return batch.over_online_views(lambda z: -log_volume(distributed.gather(z), self.eps).to(z.dtype))
