"""Euclidean energies: squared distance (VICReg, BYOL on normalised inputs) and its powers (alignment)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ebmssl.energies.base import Energy
from ebmssl.registry import register_energy


DIRECT_PAIRWISE_LIMIT = 2**22  # N * M * D elements up to which pairwise distances use exact differences


@register_energy("squared_euclidean")
class SquaredEuclideanEnergy(Energy):
    """Squared distance, E(a, b) = |a - b|^2 (optionally on l2-normalised inputs, optionally per dimension).

    * ``normalize=True`` gives BYOL's / W-MSE's normalised MSE, |a/|a| - b/|b||^2 = 2 - 2 cos(a, b).
    * ``mean_over_dims=True`` divides by the dimension D, so the mean over a batch equals
      ``F.mse_loss(a, b)`` (VICReg's invariance term).
    """

    minimal_on_identical = True

    def __init__(self, normalize: bool = False, mean_over_dims: bool = False, eps: float = 1e-12) -> None:
        super().__init__()
        self.scale_invariant = normalize  # only the normalised form ignores rescaling
        self.normalize = normalize
        self.mean_over_dims = mean_over_dims
        self.eps = eps

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1, eps=self.eps) if self.normalize else x

    def _scale(self, energy: torch.Tensor, dim: int) -> torch.Tensor:
        return energy / dim if self.mean_over_dims else energy

    def aligned(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            return self._scale(normalized_squared_distance(a, b, self.eps), a.shape[-1])
        return self._scale((a - b).pow(2).sum(dim=-1), a.shape[-1])

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = self._prepare(a), self._prepare(b)
        if a.shape[0] * b.shape[0] * a.shape[1] <= DIRECT_PAIRWISE_LIMIT:
            # exact differences: no cancellation, so the diagonal equals ``aligned`` to rounding
            squared = (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)
        else:
            # expanded form keeps memory at O(N M) (large queues); centring both sides on a shared mean
            # shrinks the norms the expansion cancels, and the clamp guards tiny negative values
            shift = torch.cat([a, b]).mean(0, keepdim=True).detach()
            a, b = a - shift, b - shift
            squared = (a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1)[None, :] - 2 * a @ b.T).clamp_min(0.0)
        return self._scale(squared, a.shape[-1])


def normalized_squared_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``|a/max(|a|, eps) - b/max(|b|, eps)|^2`` per row, from row scalars: ``u_a + u_b - 2 a.b / (m_a m_b)``.

    ``m = max(|x|, eps)`` and ``u = |x / m|^2``, which is 1 unless ``|x| < eps``: the value equals the distance
    of the ``F.normalize``-d rows, zero rows included, and BYOL's official ``2 - 2 cos`` for non-zero rows.
    ``u`` is constant (1) wherever the normalisation is defined, so it is computed without gradient; the
    gradient is the normalised distance's for every row with ``|x| >= eps`` (a zero row gets the cosine's).
    Dividing (N,) norms instead of (N, D) rows keeps the backward to a few row-scalar operations.
    """
    norm_a, norm_b = torch.linalg.vector_norm(a, dim=-1), torch.linalg.vector_norm(b, dim=-1)
    safe_a, safe_b = norm_a.clamp_min(eps), norm_b.clamp_min(eps)
    with torch.no_grad():
        units = (norm_a / safe_a).square() + (norm_b / safe_b).square()
    return units - 2 * (a * b).sum(dim=-1) / (safe_a * safe_b)


@register_energy("euclidean_power")
class EuclideanPowerEnergy(Energy):
    """Distance to a power, E(a, b) = |a - b|_2^alpha (Wang & Isola 2020 alignment; alpha = 2 by default).

    ``normalize=True`` (the default, as in the paper) l2-normalises the inputs first.
    """

    minimal_on_identical = True

    def __init__(self, alpha: float = 2.0, normalize: bool = True, eps: float = 1e-12) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.scale_invariant = normalize
        self.alpha = alpha
        self.normalize = normalize
        self.eps = eps

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1, eps=self.eps) if self.normalize else x

    def aligned(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = self._prepare(a), self._prepare(b)
        squared = (a - b).pow(2).sum(dim=-1)
        return squared if self.alpha == 2 else _safe_power(squared, self.alpha / 2)

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = self._prepare(a), self._prepare(b)
        squared = (a[:, None, :] - b[None, :, :]).pow(2).sum(dim=-1)
        return squared if self.alpha == 2 else _safe_power(squared, self.alpha / 2)


def _safe_power(squared: torch.Tensor, exponent: float) -> torch.Tensor:
    """``squared ** exponent`` with a zero (not infinite) gradient where ``squared`` is 0."""
    positive = squared > 0
    safe = torch.where(positive, squared, torch.ones_like(squared))
    return torch.where(positive, safe.pow(exponent), torch.zeros_like(squared))
