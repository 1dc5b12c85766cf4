"""Mutual-information bounds against ground truth (Poole et al. 2019, "On Variational Bounds of Mutual
Information", section 5 / Fig. 2; official code: google-research ``vbmi/vbmi_demo.ipynb``).

Data: x ~ N(0, I_d), y = rho x + sqrt(1 - rho^2) eps with eps ~ N(0, I_d), so each coordinate pair is a
bivariate Gaussian with correlation rho and

    I(x; y) = -d/2 log(1 - rho^2)            (nats; :func:`gaussian_mi`)

The ``cubic`` transform replaces y by y^3, an invertible map of y alone, which leaves I(x; y) unchanged
(the Jacobian of the map cancels in log p(y|x) / p(y); :func:`log_density_ratio`) but makes the
dependency nonlinear for the critic.

A critic f(x, y) is trained by gradient ascent on one bound while the true MI follows a staircase (Poole
et al.'s protocol: the correlation is raised every ``steps_per_level`` steps); at the end of each level
the bound is evaluated on fresh batches (mean and standard deviation over batches). Bounds:

* ``infonce``: log N + mean_i [f_ii - logsumexp_j f_ij] <= log N (Oord et al. 2018);
* ``nwj``: mean_i f_ii - e^{-1} mean_{i != j} exp(f_ij) (Nguyen, Wainwright & Jordan 2010);
* ``wpc``: the InfoNCE objective with a Lipschitz (spectrally normalised) critic, Wasserstein predictive
  coding (Ozair et al. 2019); alongside it we report the Wasserstein dependency dual of the same critic,
  ``mean_i f_ii - mean_{i != j} f_ij`` (an estimate of W1(p(x, y), p(x) p(y)) up to the Lipschitz
  constant, not of the KL mutual information).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ebmssl.energies.critics import SeparableCritic
from ebmssl.energies.lipschitz import LipschitzCritic
from ebmssl.strategies.contrastive.infonce import infonce_bound_from_scores
from ebmssl.strategies.contrastive.nwj import nwj_bound
from ebmssl.strategies.contrastive.wpc import off_diagonal_mean

BOUNDS = ("infonce", "nwj", "wpc")
TRANSFORMS = ("identity", "cubic")


# -- ground truth ------------------------------------------------------------------------------------
def gaussian_mi(rho: float, dim: int) -> float:
    """I(x; y) = -d/2 log(1 - rho^2) nats for d independent coordinate pairs of correlation rho."""
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho must lie in (-1, 1), got {rho}")
    return -0.5 * dim * math.log1p(-rho * rho)


def rho_for_mi(mi: float, dim: int) -> float:
    """The correlation rho >= 0 whose Gaussian pair has mutual information ``mi`` nats: sqrt(1 - e^{-2 mi/d})."""
    if mi < 0:
        raise ValueError(f"mutual information must be >= 0, got {mi}")
    return math.sqrt(-math.expm1(-2.0 * mi / dim))


def _cubic(y: torch.Tensor) -> torch.Tensor:
    return y.pow(3)


def _cubic_inverse(y: torch.Tensor) -> torch.Tensor:
    return y.sign() * y.abs().pow(1.0 / 3.0)


def _cubic_log_abs_det_inverse(y: torch.Tensor) -> torch.Tensor:
    """log |d y/d y'| summed over coordinates for y = cbrt(y'): -log 3 - (2/3) log |y'|."""
    return (-math.log(3.0) - (2.0 / 3.0) * y.abs().log()).sum(dim=-1)


def apply_transform(y: torch.Tensor, transform: str) -> torch.Tensor:
    """Apply the invertible per-coordinate transform ``identity`` or ``cubic`` (y -> y^3)."""
    if transform == "identity":
        return y
    if transform == "cubic":
        return _cubic(y)
    raise ValueError(f"unknown transform {transform!r}; choose one of {TRANSFORMS}")


def sample_pairs(
    batch_size: int, dim: int, rho: float, generator: torch.Generator | None = None, transform: str = "identity"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` joint samples (x, g(y)) with y = rho x + sqrt(1 - rho^2) eps and g the transform."""
    x = torch.randn(batch_size, dim, generator=generator)
    eps = torch.randn(batch_size, dim, generator=generator)
    y = rho * x + math.sqrt(1.0 - rho * rho) * eps
    return x, apply_transform(y, transform)


def _gaussian_log_density(value: torch.Tensor, mean: torch.Tensor | float, variance: float) -> torch.Tensor:
    return (-0.5 * (value - mean).pow(2) / variance - 0.5 * math.log(2 * math.pi * variance)).sum(dim=-1)


def log_density_ratio(x: torch.Tensor, y: torch.Tensor, rho: float, transform: str = "identity") -> torch.Tensor:
    """log p(y | x) - log p(y) of observed (possibly transformed) samples, from the known densities.

    For a transformed y' = g(y), both densities pick up the same change-of-variables term
    log |d g^{-1}/d y'|, which is added to each explicitly (and so cancels): its expectation
    E log p(y'|x)/p(y') is the mutual information whatever the invertible g.
    """
    x, y = x.double(), y.double()
    if transform == "identity":
        y_latent, log_det = y, torch.zeros(y.shape[0], dtype=y.dtype)
    elif transform == "cubic":
        y_latent, log_det = _cubic_inverse(y), _cubic_log_abs_det_inverse(y)
    else:
        raise ValueError(f"unknown transform {transform!r}; choose one of {TRANSFORMS}")
    conditional = _gaussian_log_density(y_latent, rho * x, 1.0 - rho * rho) + log_det
    marginal = _gaussian_log_density(y_latent, 0.0, 1.0) + log_det
    return conditional - marginal


def monte_carlo_mi(rho: float, dim: int, samples: int, transform: str = "identity", seed: int = 0) -> tuple[float, float]:
    """Monte-Carlo estimate E[log p(y|x)/p(y)] of the MI from the known densities, and its standard error."""
    generator = torch.Generator().manual_seed(seed)
    x, y = sample_pairs(samples, dim, rho, generator, transform)
    ratio = log_density_ratio(x, y, rho, transform)
    return ratio.mean().item(), (ratio.std() / math.sqrt(samples)).item()


# -- critics and bounds ------------------------------------------------------------------------------
def build_critic(bound: str, dim: int, hidden_dim: int = 256, output_dim: int = 32, num_layers: int = 2) -> nn.Module:
    """Poole et al.'s separable critic f(x, y) = <g(x), h(y)> (ReLU MLPs); spectrally normalised for ``wpc``."""
    if bound == "wpc":
        return LipschitzCritic(dim, hidden_dim=hidden_dim, output_dim=output_dim, num_layers=num_layers, spectral_norm=True)
    if bound in ("infonce", "nwj"):
        return SeparableCritic(dim, hidden_dim=hidden_dim, output_dim=output_dim, num_layers=num_layers)
    raise ValueError(f"unknown bound {bound!r}; choose one of {BOUNDS}")


def wasserstein_dual(scores: torch.Tensor) -> torch.Tensor:
    """mean_i f_ii - mean_{i != j} f_ij: the dual objective of the Wasserstein dependency measure."""
    return torch.diagonal(scores).mean() - off_diagonal_mean(scores)


def bound_value(bound: str, scores: torch.Tensor) -> torch.Tensor:
    """The MI estimate (nats) of ``bound`` from a critic score matrix f_ij (positives on the diagonal)."""
    if bound in ("infonce", "wpc"):
        return infonce_bound_from_scores(scores)
    if bound == "nwj":
        return nwj_bound(scores)
    raise ValueError(f"unknown bound {bound!r}; choose one of {BOUNDS}")


def critic_scores(critic: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """f(x_i, y_j) for all pairs, shape (N, N): the negated pairwise energy of an ebmssl critic."""
    return -critic.pairwise(x, y)


# -- the staircase protocol --------------------------------------------------------------------------
@dataclass
class StaircaseResult:
    """One critic trained on one bound over the MI staircase."""

    bound: str
    batch_size: int
    transform: str
    levels: list[dict[str, float]] = field(default_factory=list)  # per MI level: truth, mean, std, ...
    trace: list[dict[str, float]] = field(default_factory=list)  # per training step: step, true_mi, estimate
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "bound": self.bound, "batch_size": self.batch_size, "transform": self.transform,
            "log_n": math.log(self.batch_size), "levels": self.levels, "trace": self.trace, "seconds": self.seconds,
        }


def train_staircase(
    bound: str,
    batch_size: int,
    mi_levels: Sequence[float],
    dim: int = 20,
    steps_per_level: int = 400,
    eval_batches: int = 20,
    lr: float = 5e-4,
    transform: str = "identity",
    critic: Mapping[str, Any] | None = None,
    seed: int = 0,
    trace_every: int = 10,
    on_level: Callable[[dict[str, float]], None] | None = None,
) -> StaircaseResult:
    """Train one critic by gradient ascent on ``bound`` while the true MI steps through ``mi_levels``.

    At the end of each level the critic is evaluated (no gradient) on ``eval_batches`` fresh batches of
    ``batch_size``: ``estimate`` is the mean bound, ``std`` its standard deviation across batches (the
    estimator's variance at this batch size), plus the Wasserstein dual for ``wpc``. Adam, as vbmi.
    """
    if bound not in BOUNDS:
        raise ValueError(f"unknown bound {bound!r}; choose one of {BOUNDS}")
    torch.manual_seed(seed)
    model = build_critic(bound, dim, **dict(critic or {}))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed + 1)
    eval_generator = torch.Generator().manual_seed(seed + 2)
    result = StaircaseResult(bound, batch_size, transform)
    started = time.perf_counter()
    step = 0
    for mi in mi_levels:
        rho = rho_for_mi(float(mi), dim)
        model.train()
        for _ in range(steps_per_level):
            x, y = sample_pairs(batch_size, dim, rho, generator, transform)
            estimate = bound_value(bound, critic_scores(model, x, y))
            optimizer.zero_grad(set_to_none=True)
            (-estimate).backward()
            optimizer.step()
            if step % trace_every == 0:
                result.trace.append({"step": step, "true_mi": float(mi), "estimate": estimate.item()})
            step += 1
        model.eval()
        values, duals = [], []
        with torch.no_grad():
            for _ in range(eval_batches):
                x, y = sample_pairs(batch_size, dim, rho, eval_generator, transform)
                scores = critic_scores(model, x, y)
                values.append(bound_value(bound, scores).item())
                duals.append(wasserstein_dual(scores).item())
        values_t = torch.tensor(values, dtype=torch.float64)
        level = {
            "true_mi": float(mi),
            "rho": rho,
            "estimate": values_t.mean().item(),
            "std": values_t.std().item() if len(values) > 1 else 0.0,
            "wasserstein_dual": float(sum(duals) / len(duals)),
            "finite": bool(torch.isfinite(values_t).all()),
        }
        result.levels.append(level)
        if on_level is not None:
            on_level(level)
    result.seconds = time.perf_counter() - started
    return result


def run_mi_experiment(config: Mapping[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every (bound, batch size, transform) of an ``experiment: mi_bounds`` config; returns the results.

    Config keys: ``dim``, ``mi_levels``, ``steps_per_level``, ``eval_batches``, ``lr``, ``seed``, ``critic``
    (keyword arguments of :func:`build_critic`) and ``runs``: a list of ``{bound, batch_sizes, transform}``.
    """
    results = []
    for spec in config["runs"]:
        for batch_size in spec["batch_sizes"]:
            transform = spec.get("transform", "identity")
            result = train_staircase(
                spec["bound"], int(batch_size), config["mi_levels"], dim=int(config["dim"]),
                steps_per_level=int(config["steps_per_level"]), eval_batches=int(config["eval_batches"]),
                lr=float(config["lr"]), transform=transform, critic=config.get("critic"), seed=int(config.get("seed", 0)),
            )
            summary = ", ".join(f"{lv['true_mi']:g}->{lv['estimate']:.2f}" for lv in result.levels)
            log(f"{spec['bound']:>8} N={batch_size:<4} {transform:<8} {result.seconds:6.1f}s  {summary}")
            results.append(result.as_dict())
    return {"dim": int(config["dim"]), "mi_levels": list(config["mi_levels"]), "results": results}
