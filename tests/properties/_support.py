"""Shared builders and inputs for the registry-wide property tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import ebmssl
from ebmssl.objective import Objective
from ebmssl.registry import ENERGIES, STRATEGIES

# The user module outside the package registers `user_scaled_cosine` and `user_spread`: importing it here
# puts user components under the same properties as the built-in ones.
USER_COMPONENTS = Path(__file__).resolve().parents[1] / "user_components"
if str(USER_COMPONENTS) not in sys.path:
    sys.path.insert(0, str(USER_COMPONENTS))
import my_energy  # noqa: E402,F401

ENERGY_PROPERTIES = frozenset(
    {"aligned_is_diagonal", "finite", "infonce_bound", "state_roundtrip", "scale_rotation_invariant", "minimal_on_identical"}
)
STRATEGY_PROPERTIES = frozenset(
    {
        "collapsed_worse_than_spread",
        "subspace_worse_than_spread",
        "finite",
        "permutation_invariant",
        "terms_sum_to_loss",
        "target_no_grad",
        "state_roundtrip",
    }
)

# Unspecified settings (derandomize...) come from the active Hypothesis profile (tests/conftest.py).
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("EBMSSL_PROPERTY_EXAMPLES", "20")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

ENERGY_NAMES = ENERGIES.names()
STRATEGY_NAMES = STRATEGIES.names()
MIN_N, MAX_N, MIN_D, MAX_D = 4, 32, 2, 16


# -- building ----------------------------------------------------------------------------------------
def example_config(cls: Any) -> dict[str, Any]:
    return dict(getattr(cls, "example_config", {}) or {})


def build_energy(name: str) -> ebmssl.Energy:
    cls = ENERGIES.get(name)
    return ENERGIES.build({"name": name, **example_config(cls)}, where=f"property test of energy {name!r}")


def build_strategy(name: str) -> ebmssl.Strategy:
    cls = STRATEGIES.get(name)
    return STRATEGIES.build({"name": name, **example_config(cls)}, where=f"property test of strategy {name!r}")


def fixed_dim(cls: Any) -> int | None:
    """The embedding width a component's example_config pins (a queue's `dim`, DINO's `output_dim`...)."""
    config = example_config(cls)
    for key in ("dim", "input_dim", "embedding_dim", "output_dim", "num_prototypes"):
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    explicit = getattr(cls, "example_dim", None)
    return explicit if isinstance(explicit, int) else None


def example_energy_for(strategy_cls: Any) -> ebmssl.Energy:
    """The energy a strategy is exercised with: its own `example_energy` spec, else a natural default."""
    spec = getattr(strategy_cls, "example_energy", None)
    if spec is None:
        if getattr(strategy_cls, "input_kind", "embedding") == "logits" and "softmax_cross_entropy" in ENERGIES:
            spec = {"name": "softmax_cross_entropy"}
        else:
            spec = {"name": "cosine"}
    if isinstance(spec, str):
        spec = {"name": spec}
    cls = ENERGIES.get(spec["name"])
    return ENERGIES.build({**example_config(cls), **spec}, where="example energy")


def objective_for(strategy: ebmssl.Strategy, energy_weight: float = 0.0, **kwargs: Any) -> Objective:
    energy = example_energy_for(type(strategy))
    return Objective(energy, [strategy], energy_weight=energy_weight, allow_collapse=True, **kwargs)


def exemption(cls: Any, prop: str) -> str | None:
    """The reason ``cls`` declares for not satisfying ``prop`` (``exempt_properties``), or None."""
    return (getattr(cls, "exempt_properties", {}) or {}).get(prop)


def applicable(names: list[str], registry: Any, prop: str, when: Any = None) -> list[str]:
    """The components among ``names`` that ``prop`` applies to, chosen when the tests are collected (no
    run-time skips): those that do not declare ``prop`` exempt, and for which ``when(name)`` holds.
    tests/test_registry.py checks that every declared exemption names a known property and gives a reason."""
    return [n for n in names if exemption(registry.get(n), prop) is None and (when is None or when(n))]


# -- inputs ------------------------------------------------------------------------------------------
@st.composite
def shapes(draw: st.DrawFn, dim: int | None = None, min_rows_over_dim: int | None = None) -> tuple[int, int, int]:
    """(N, D, seed) with N in [4, 32], D in [2, 16] (or the component's pinned width)."""
    d = dim if dim is not None else draw(st.integers(MIN_D, MAX_D))
    n = draw(st.integers(MIN_N, MAX_N))
    if min_rows_over_dim is not None:
        n = max(n, d + min_rows_over_dim)
    seed = draw(st.integers(0, 2**31 - 1))
    return n, d, seed


VARIANTS = ("gaussian", "zero_rows", "all_zero", "duplicate_rows", "collapsed", "one_hot")
SCALES = (1e-3, 1e-1, 1.0, 10.0, 100.0)


def make_views(
    n: int, d: int, seed: int, variant: str = "gaussian", scale: float = 1.0, num_views: int = 2
) -> list[torch.Tensor]:
    """Finite (N, D) float32 views: Gaussian, with zero rows, all zero, duplicated rows, collapsed or one-hot."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=generator)
    views = []
    for _ in range(num_views):
        view = base + 0.3 * torch.randn(n, d, generator=generator)
        if variant == "zero_rows":
            view[:: max(n // 3, 1)] = 0.0
        elif variant == "all_zero":
            view = torch.zeros(n, d)
        elif variant == "duplicate_rows":
            view[n // 2 :] = view[: n - n // 2].clone()
        elif variant == "collapsed":
            view = base[:1].expand(n, d).clone()
        elif variant == "one_hot":
            view = torch.nn.functional.one_hot(torch.arange(n) % d, d).float()
        views.append((scale * view).contiguous())
    return views


def spread_batch(n: int, d: int, seed: int, scale: float = 1.0) -> list[torch.Tensor]:
    """Two well-spread views: rows centred and whitened (sample covariance exactly scale^2 I; needs N > D),
    the second view a slightly perturbed copy of the first (aligned positives)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    x = x - x.mean(0, keepdim=True)
    covariance = x.T @ x / (n - 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    x = x @ eigenvectors @ torch.diag(eigenvalues.rsqrt()) @ eigenvectors.T
    y = x + 0.05 * torch.randn(n, d, generator=generator, dtype=torch.float64)
    return [(scale * x).float(), (scale * y).float()]


def collapsed_batch(spread: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every row of every view equal to the spread batch's first row (complete collapse)."""
    row = spread[0][:1]
    return [row.expand_as(v).clone() for v in spread]


def subspace_batch(spread: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """The spread views projected orthogonally onto one random line (dimensional collapse to rank 1)."""
    generator = torch.Generator().manual_seed(seed + 1)
    direction = torch.randn(spread[0].shape[1], generator=generator, dtype=torch.float64)
    direction = direction / direction.norm()
    projector = torch.outer(direction, direction)
    return [(v.double() @ projector).float() for v in spread]


def requires_grad(views: list[torch.Tensor]) -> list[torch.Tensor]:
    return [v.detach().clone().requires_grad_(True) for v in views]


def all_finite(tensors: list[torch.Tensor | None]) -> bool:
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


def buffers_finite(module: torch.nn.Module) -> list[str]:
    return [name for name, b in module.named_buffers() if b.is_floating_point() and not torch.isfinite(b).all()]


def random_orthogonal(d: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    return bool(torch.allclose(a, b, rtol=rtol, atol=atol))


def describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, value {t.detach().flatten()[:4].tolist()}"


