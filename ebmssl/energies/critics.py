"""Critic energies for mutual-information bounds: E(a, b) = -f(a, b), f the critic score.

Poole et al. 2019, "On Variational Bounds of Mutual Information" (official code: google-research
``vbmi``), compare three critic families, all of which are here:

* ``dot_critic``:       f(a, b) = <a, b> / T (optionally on l2-normalised inputs, then = cosine / T);
* ``bilinear_critic``:  f(a, b) = a^T W b, W a learned (D, D) matrix (initialised to the identity);
* ``separable_critic``: f(a, b) = <g(a), h(b)>, g and h small ReLU MLPs (vbmi's ``SeparableCritic``).

Every critic computes the all-pairs score matrix with one matrix product of per-row features, so
``aligned`` (the row-wise score) is exactly the diagonal of ``pairwise``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ebmssl.energies.base import Energy
from ebmssl.registry import register_energy


def critic_mlp(dim: int, hidden_dim: int, output_dim: int, num_layers: int = 1) -> nn.Sequential:
    """``num_layers`` ReLU layers of width ``hidden_dim`` then a linear map to ``output_dim`` (vbmi's ``mlp``)."""
    if num_layers < 0:
        raise ValueError(f"num_layers must be >= 0, got {num_layers}")
    layers: list[nn.Module] = []
    width = dim
    for _ in range(num_layers):
        layers += [nn.Linear(width, hidden_dim), nn.ReLU()]
        width = hidden_dim
    layers.append(nn.Linear(width, output_dim))
    return nn.Sequential(*layers)


class SeparableScoreEnergy(Energy):
    """Base of critics with f(a, b) = <u(a), v(b)>: subclasses give the feature maps ``u`` and ``v``."""

    input_dim: int | None = None  # the embedding width a learned critic was built for (its `dim:`)

    def bind_sizes(self, sizes) -> None:  # noqa: ANN001  (ebmssl.strategies.base.Sizes)
        """Check the critic's ``dim`` against the model's widths (the builder calls this)."""
        widths = {int(sizes.online_dim), int(sizes.target_dim)}
        if self.input_dim is not None and widths != {self.input_dim}:
            raise ValueError(
                f"the critic was built with dim={self.input_dim} but the model gives embeddings of width "
                f"{' and '.join(map(str, sorted(widths)))}; set the energy's `dim:` to the projector's output_dim"
            )

    def features_a(self, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features_b(self, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score_pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The critic score matrix f(a_i, b_j), shape (N, M)."""
        return self.features_a(a) @ self.features_b(b).T

    def score_aligned(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The row-wise critic score f(a_i, b_i), shape (N,)."""
        return (self.features_a(a) * self.features_b(b)).sum(dim=-1)

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -self.score_pairwise(a, b)

    def aligned(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -self.score_aligned(a, b)


@register_energy("dot_critic")
class DotCritic(SeparableScoreEnergy):
    """Dot-product critic, E(a, b) = -<a, b> / T (``normalize=True``: -cos(a, b) / T).

    Poole et al. 2019's simplest critic; unnormalised, it is not invariant to rescaling, so the bound
    it gives can grow with the embedding norm (use ``normalize`` for a bounded critic).
    """

    def __init__(self, temperature: float = 1.0, normalize: bool = False, eps: float = 1e-12) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.normalize = normalize
        self.eps = eps
        self.scale_invariant = normalize  # read by the registry-wide property tests

    def features_a(self, a: torch.Tensor) -> torch.Tensor:
        a = F.normalize(a, dim=-1, eps=self.eps) if self.normalize else a
        return a / self.temperature

    def features_b(self, b: torch.Tensor) -> torch.Tensor:
        return F.normalize(b, dim=-1, eps=self.eps) if self.normalize else b


@register_energy("bilinear_critic")
class BilinearCritic(SeparableScoreEnergy):
    """Bilinear critic, E(a, b) = -a^T W b with a learned (dim, dim) matrix W (Poole et al. 2019).

    W starts at the identity, so the critic starts as the dot-product critic.
    """

    example_config = {"dim": 8}

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.input_dim = int(dim)
        self.weight = nn.Parameter(torch.eye(dim))

    def features_a(self, a: torch.Tensor) -> torch.Tensor:
        return a @ self.weight

    def features_b(self, b: torch.Tensor) -> torch.Tensor:
        return b


@register_energy("separable_critic")
class SeparableCritic(SeparableScoreEnergy):
    """Separable critic, E(a, b) = -<g(a), h(b)> with two ReLU MLPs g, h: dim -> output_dim.

    As vbmi's ``SeparableCritic`` (Poole et al. 2019): each MLP has ``num_layers`` hidden layers of
    width ``hidden_dim`` (vbmi default: 1 layer of 256, embedding 32).
    """

    example_config = {"dim": 8, "hidden_dim": 16, "output_dim": 8}

    def __init__(self, dim: int, hidden_dim: int = 256, output_dim: int = 32, num_layers: int = 1) -> None:
        super().__init__()
        self.input_dim = int(dim)
        self.g = critic_mlp(dim, hidden_dim, output_dim, num_layers)
        self.h = critic_mlp(dim, hidden_dim, output_dim, num_layers)

    def features_a(self, a: torch.Tensor) -> torch.Tensor:
        return self.g(a)

    def features_b(self, b: torch.Tensor) -> torch.Tensor:
        return self.h(b)
