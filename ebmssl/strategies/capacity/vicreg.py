"""Variance and covariance regularisers of VICReg (Bardes et al. 2022, "VICReg: Variance-Invariance-
Covariance Regularization for Self-Supervised Learning"; official code github.com/facebookresearch/vicreg,
main_vicreg.py ``VICReg.forward``).

Both terms act on each online view gathered over every process (the official ``FullGatherLayer``),
with unbiased (N - 1) statistics:

* variance: ``mean_k relu(gamma - sqrt(Var(z_k) + eps))`` (official: ``std_loss`` = the mean of the
  two views' hinges, i.e. ``/ 2`` each);
* covariance: ``sum_{k != l} Cov(z)_kl^2 / D``. Our per-view terms are averaged over the online views,
  while the official ``cov_loss`` SUMS the two views' terms: the VICReg config therefore gives the
  covariance weight 2 (= the official coefficient 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ebmssl import distributed
from ebmssl.energies.cross_correlation import off_diagonal
from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Strategy, ViewBatch


def _check_batch(z: torch.Tensor) -> None:
    if z.shape[0] < 2:
        raise ValueError(f"VICReg statistics need at least 2 samples in the (gathered) batch, got {z.shape[0]}")


def variance_hinge(z: torch.Tensor, eps: float = 1e-4, target_std: float = 1.0) -> torch.Tensor:
    """``mean_k relu(target_std - sqrt(Var(z_k) + eps))`` with the unbiased variance over the rows of z."""
    _check_batch(z)
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(target_std - std).mean()


def covariance_penalty(z: torch.Tensor) -> torch.Tensor:
    """``sum_{k != l} Cov(z)_kl^2 / D`` with ``Cov = (z - mean)^T (z - mean) / (N - 1)``."""
    _check_batch(z)
    centered = z - z.mean(dim=0, keepdim=True)
    cov = centered.T @ centered / (z.shape[0] - 1)
    return off_diagonal(cov).pow(2).sum() / z.shape[1]


@register_strategy("vicreg_variance")
class VICRegVariance(Strategy):
    """Variance hinge: mean over online views of mean_k relu(target_std - sqrt(Var(z_k) + eps)) (VICReg).

    Zero once every dimension has standard deviation >= target_std over the global batch; maximal
    (about target_std) on a collapsed batch.
    """

    family = "capacity"

    def __init__(self, eps: float = 1e-4, target_std: float = 1.0) -> None:
        super().__init__()
        if eps < 0:
            raise ValueError(f"eps must be non-negative, got {eps}")
        self.eps = eps
        self.target_std = target_std

    def loss(self, batch: ViewBatch, energy: torch.nn.Module) -> torch.Tensor:
        return batch.over_online_views(lambda z: variance_hinge(distributed.gather(z), self.eps, self.target_std))


@register_strategy("vicreg_covariance")
class VICRegCovariance(Strategy):
    """Covariance penalty: mean over online views of sum_{k != l} Cov(z)_kl^2 / D (VICReg; official sums views).

    Decorrelates the dimensions so that information spreads over all of them. It is zero on a batch
    collapsed to a single point (no covariance at all): it limits collapse onto a low-dimensional
    subspace and is used together with ``vicreg_variance``, which handles the single-point collapse.
    """

    family = "capacity"
    exempt_properties = {
        "collapsed_worse_than_spread": "a batch collapsed to one point has zero covariance, so the penalty is "
        "0 there (its minimum); vicreg_variance covers the single-point collapse",
        "subspace_worse_than_spread": "the covariance scales with the squared spread, so a small-scale rank-1 "
        "batch can have less off-diagonal covariance than a larger well-spread one; the term penalises "
        "correlated dimensions at the variance that vicreg_variance holds at 1, and the pair together is "
        "worse on rank-1 batches (tests/strategies/capacity/test_vicreg.py)",
    }

    def __init__(self) -> None:
        super().__init__()

    def loss(self, batch: ViewBatch, energy: torch.nn.Module) -> torch.Tensor:
        return batch.over_online_views(lambda z: covariance_penalty(distributed.gather(z)))
