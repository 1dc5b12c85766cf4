"""Collapse diagnostics on embeddings: spread, rank, alignment/uniformity, energy gap, InfoNCE bound.

All functions are plain maths on a batch of embeddings, evaluated without gradient; they return
detached tensors (scalars as 0-dim tensors), except :func:`collect_diagnostics` (Python floats) and
:func:`detect_collapse` (human-readable reasons).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

#: Temperature of the cosine energy used when no usable energy is given to :func:`collect_diagnostics`.
DEFAULT_COSINE_TEMPERATURE = 0.1

#: :func:`detect_collapse` thresholds.
#: complete collapse: normalised std below this fraction of the healthy value 1/sqrt(d);
COMPLETE_COLLAPSE_STD_FRACTION = 0.1
#: dimensional collapse: RankMe below this fraction of its maximum min(N, d);
DIMENSIONAL_COLLAPSE_RANK_FRACTION = 0.05
#: indistinguishable energies: (mean negative - mean positive energy) / mean |energy| below this.
ENERGY_GAP_RELATIVE_THRESHOLD = 0.01


def _flat(z: torch.Tensor) -> torch.Tensor:
    return z.detach().flatten(1)


@torch.no_grad()
def normalized_std(z: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the batch standard deviation of l2-normalised embeddings (Chen & He 2021).

    ``std = (1/d) sum_k std_i(z_ik / |z_i|)`` (unbiased std over the N rows, as in lightly's
    ``std_of_l2_normalized``). About ``1/sqrt(d)`` for embeddings spread isotropically on the sphere,
    0 when every row points the same way (SimSiam, "Exploring Simple Siamese Representation Learning",
    Fig. 2). Invariant to positive rescaling of each row.
    """
    z = F.normalize(_flat(z).double(), dim=1)
    if z.shape[0] < 2:
        return torch.zeros((), dtype=torch.float64, device=z.device)
    return z.std(dim=0).mean()


@torch.no_grad()
def singular_values(z: torch.Tensor) -> torch.Tensor:
    """Singular values (descending, min(N, d) of them, float64) of the embedding matrix Z (N, d).

    NaN when Z holds a non-finite value (a diverged model): the diagnostics then read NaN instead of
    the SVD failing to converge and ending the run."""
    z = _flat(z).double()
    if not bool(torch.isfinite(z).all()):
        return torch.full((min(z.shape),), float("nan"), dtype=z.dtype, device=z.device)
    return torch.linalg.svdvals(z)


@torch.no_grad()
def rankme(z: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """RankMe effective rank (Garrido et al. 2023, "RankMe: Assessing the Downstream Performance of
    Pretrained Self-Supervised Representations by Their Rank").

    With ``sigma`` the singular values of Z, ``p_k = sigma_k / |sigma|_1 + eps`` and
    ``RankMe(Z) = exp(-sum_k p_k log p_k)``, a smooth rank in [1, min(N, d)] (up to O(eps)): 1 when all
    rows are collinear, min(N, d) for a flat spectrum. As in the paper, Z is the raw (uncentred)
    embedding matrix; singular values are computed in float64.
    """
    sigma = singular_values(z)
    p = sigma / sigma.sum().clamp_min(torch.finfo(sigma.dtype).tiny) + eps
    return torch.exp(-(p * torch.log(p)).sum())


@torch.no_grad()
def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Alignment ``E_i |f(x_i) - f(y_i)|_2^alpha`` of l2-normalised positive pairs (Wang & Isola 2020,
    "Understanding Contrastive Representation Learning through Alignment and Uniformity on the
    Hypersphere"); lower is better, 0 when the two views coincide, at most 2^alpha."""
    a, b = F.normalize(_flat(z1).double(), dim=1), F.normalize(_flat(z2).double(), dim=1)
    return (a - b).norm(dim=1).pow(alpha).mean()


@torch.no_grad()
def uniformity(z: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Uniformity ``log E_{i<j} exp(-t |f(x_i) - f(x_j)|^2)`` of l2-normalised embeddings (Wang & Isola
    2020); lower is better: 0 for a collapsed batch, about -t * 2 for well-spread points in high dimension.
    Computed with a log-sum-exp for stability; 0 when there are fewer than two rows."""
    x = F.normalize(_flat(z).double(), dim=1)
    if x.shape[0] < 2:
        return torch.zeros((), dtype=torch.float64, device=x.device)
    squared = torch.pdist(x, p=2).pow(2)
    return torch.logsumexp(-t * squared, dim=0) - math.log(squared.numel())


@torch.no_grad()
def energy_statistics(energy: nn.Module, a: torch.Tensor, b: torch.Tensor) -> dict:
    """Positive and negative energies of a batch of pairs: ``E = energy.pairwise(a, b)`` (N, N).

    ``positive = diag(E)`` (the N positive pairs ``E(a_i, b_i)``), ``negative = E_ij, i != j`` (N(N-1)
    in-batch negatives), ``gap = mean(negative) - mean(positive)`` (> 0 when the energy separates
    positives from negatives, 0 on a collapsed batch; energy-based view of SSL, LeCun et al. 2006, and
    docs/design.md, "The energy view"), and ``gap_relative = gap / mean|E|`` (scale free). Returns the
    scalar means and gaps as floats and the raw ``positive`` / ``negative`` values (1-D tensors on the CPU) for histograms.
    """
    matrix = energy.pairwise(a, b).detach()
    n = matrix.shape[0]
    if matrix.ndim != 2 or matrix.shape[1] != n:
        raise ValueError(f"energy.pairwise must give a square (N, N) matrix, got {tuple(matrix.shape)}")
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=matrix.device)
    positive = torch.diagonal(matrix).double()
    negative = matrix[off_diagonal].double()
    positive_mean = positive.mean().item() if n else float("nan")
    negative_mean = negative.mean().item() if n > 1 else float("nan")
    gap = negative_mean - positive_mean
    scale = matrix.double().abs().mean().item() if n else 0.0
    return {
        "positive_mean": positive_mean,
        "negative_mean": negative_mean,
        "gap": gap,
        "gap_relative": gap / scale if scale > 0 else 0.0,
        "positive": positive.cpu(),
        "negative": negative.cpu(),
    }


@torch.no_grad()
def infonce_bound(energy: nn.Module, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, float]:
    """InfoNCE lower bound on the mutual information I(a; b) in nats, and its ceiling log N.

    ``I_NCE = log N + (1/N) sum_i [-E_ii - log sum_j exp(-E_ij)]`` with ``E = energy.pairwise(a, b)``
    (Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding"; Poole et al. 2019,
    "On Variational Bounds of Mutual Information"). Each bracket is a log-probability, so
    ``I_NCE <= log N`` whatever the inputs: the estimate saturates at log(batch size), which is why small
    batches limit contrastive methods. Returns ``(bound, log N)``.
    """
    from ebmssl.strategies.contrastive.infonce import infonce_bound_from_scores

    logits = -energy.pairwise(a, b).detach().double()
    log_n = math.log(logits.shape[0])
    # the bound is <= log N in exact arithmetic; clamp the rounding error so it holds exactly
    return infonce_bound_from_scores(logits).clamp_max(log_n), log_n


@torch.no_grad()
def instance_identification_accuracy(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Fraction of rows i whose cosine nearest neighbour among the rows of view 2 is its own pair z2_i.

    ``acc = (1/N) sum_i 1[cos(z1_i, z2_i) > max_{j != i} cos(z1_i, z2_j)]``: the accuracy of the
    non-parametric instance classifier that contrastive learning optimises (Wu et al. 2018; SimCLR seen as
    "which image is this view of"; Chen et al. 2020). Ties count as misidentified, so the value is
    invariant to permuting the pairs together; a collapsed batch scores 0, identical distinct views 1.
    """
    a, b = F.normalize(_flat(z1).double(), dim=1), F.normalize(_flat(z2).double(), dim=1)
    n = a.shape[0]
    if n == 0:
        return torch.zeros((), dtype=torch.float64)
    if n == 1:
        return torch.ones((), dtype=torch.float64, device=a.device)
    similarity = a @ b.T
    own = torch.diagonal(similarity)
    others = similarity.masked_fill(torch.eye(n, dtype=torch.bool, device=a.device), float("-inf"))
    return (own > others.max(dim=1).values).double().mean()


def _usable_energy(energy: nn.Module | None, z1: torch.Tensor, z2: torch.Tensor) -> nn.Module:
    if energy is None:
        return _default_energy()
    try:
        with torch.no_grad():
            matrix = energy.pairwise(z1, z2)
    except (NotImplementedError, RuntimeError, ValueError, TypeError, IndexError):
        return _default_energy()
    n = z1.shape[0]
    if not isinstance(matrix, torch.Tensor) or tuple(matrix.shape) != (n, n) or not torch.isfinite(matrix).all():
        return _default_energy()
    return energy


def _default_energy() -> nn.Module:
    from ebmssl.energies.cosine import CosineEnergy

    return CosineEnergy(temperature=DEFAULT_COSINE_TEMPERATURE)


@torch.no_grad()
def collect_diagnostics(z1: torch.Tensor, z2: torch.Tensor, energy: nn.Module | None = None) -> dict[str, float]:
    """Every scalar diagnostic of a batch of positive pairs (z1_i, z2_i), as Python floats.

    Per-view statistics (``normalized_std``, ``rankme``, ``uniformity``) are averaged over the two views.
    Energy statistics and the InfoNCE bound use ``energy`` (orientation E(z1, z2)) when its ``pairwise``
    is defined on these shapes and finite, otherwise the cosine energy with temperature
    :data:`DEFAULT_COSINE_TEMPERATURE`. Keys: ``normalized_std``, ``normalized_std_healthy`` (1/sqrt(d)),
    ``rankme``, ``rank_limit`` (min(N, d)), ``alignment``, ``uniformity``, ``energy_positive``,
    ``energy_negative``, ``energy_gap``, ``energy_gap_relative``, ``infonce_bound``, ``infonce_log_n``,
    ``instance_id_accuracy``, ``batch_size``, ``dim``.
    """
    z1, z2 = _flat(z1), _flat(z2)
    n, d = z1.shape
    energy = _usable_energy(energy, z1, z2)
    stats = energy_statistics(energy, z1, z2)
    bound, log_n = infonce_bound(energy, z1, z2)
    return {
        "normalized_std": 0.5 * (normalized_std(z1) + normalized_std(z2)).item(),
        "normalized_std_healthy": 1.0 / math.sqrt(d),
        "rankme": 0.5 * (rankme(z1) + rankme(z2)).item(),
        "rank_limit": float(min(n, d)),
        "alignment": alignment(z1, z2).item(),
        "uniformity": 0.5 * (uniformity(z1) + uniformity(z2)).item(),
        "energy_positive": stats["positive_mean"],
        "energy_negative": stats["negative_mean"],
        "energy_gap": stats["gap"],
        "energy_gap_relative": stats["gap_relative"],
        "infonce_bound": bound.item(),
        "infonce_log_n": log_n,
        "instance_id_accuracy": instance_identification_accuracy(z1, z2).item(),
        "batch_size": float(n),
        "dim": float(d),
    }


def detect_collapse(diagnostics: Mapping[str, float], dim: int) -> list[str]:
    """Human-readable collapse warnings with their evidence; an empty list when nothing looks collapsed.

    Thresholds (module constants):

    * complete collapse: ``normalized_std < 0.1 / sqrt(dim)`` (healthy ~ 1/sqrt(dim), Chen & He 2021);
    * dimensional collapse: ``rankme < 0.05 * min(N, dim)`` (Garrido et al. 2023; Jing et al. 2022), with N
      the ``rank_limit`` / ``batch_size`` entry when present;
    * indistinguishable energies: ``energy_gap_relative < 0.01``, i.e. the mean negative energy exceeds
      the mean positive energy by less than 1% of the mean |energy|.

    Missing or non-finite entries are skipped (a non-finite entry is itself reported).
    """
    reasons: list[str] = []
    for key, value in diagnostics.items():
        if isinstance(value, (int, float)) and not math.isfinite(value):
            reasons.append(f"non-finite diagnostic: {key} = {value}")

    def get(key: str) -> float | None:
        value = diagnostics.get(key)
        if isinstance(value, torch.Tensor):
            value = value.item()
        return float(value) if value is not None and math.isfinite(float(value)) else None

    healthy = 1.0 / math.sqrt(dim)
    std = get("normalized_std")
    if std is not None and std < COMPLETE_COLLAPSE_STD_FRACTION * healthy:
        reasons.append(f"complete collapse: normalised std {std:.4g} << 1/sqrt({dim})={healthy:.3g}")
    rank = get("rankme")
    limit = get("rank_limit")
    if limit is None:
        batch = get("batch_size")
        limit = float(min(dim, batch)) if batch is not None else float(dim)
    if rank is not None and rank < DIMENSIONAL_COLLAPSE_RANK_FRACTION * limit:
        of = f"{dim} dimensions" if limit >= dim else f"a maximum of {limit:.0f} (min(batch, {dim} dimensions))"
        reasons.append(f"dimensional collapse: RankMe {rank:.3g} of {of}")
    gap = get("energy_gap_relative")
    if gap is not None and gap < ENERGY_GAP_RELATIVE_THRESHOLD:
        raw = get("energy_gap")
        raw_text = f"gap {raw:.4g}" if raw is not None else "gap"
        reasons.append(
            f"positive and negative energies are indistinguishable: {raw_text} "
            f"({gap:.3g} of the mean |energy|, threshold {ENERGY_GAP_RELATIVE_THRESHOLD})"
        )
    return reasons
