"""Critic energies for mutual-information bounds: E(a, b) = -f(a, b), f the critic score.

Poole et al. 2019, "On Variational Bounds of Mutual Information" (official code: google-research
``vbmi``), compare three critic families, all of which are here:

* ``dot_critic``:       f(a, b) = <a, b> / T (optionally on l2-normalised inputs, then = cosine / T);
* ``bilinear_critic``:  f(a, b) = a^T W b, W a learned (D, D) matrix (initialised to the identity);
* ``separable_critic``: f(a, b) = <g(a), h(b)>, g and h small ReLU MLPs (vbmi's ``SeparableCritic``).

Every critic computes the all-pairs score matrix with one matrix product of per-row features, so
``aligned`` (the row-wise score) is exactly the diagonal of ``pairwise``. A learned critic's input
width ``dim`` is the embedding width: left out of a config, the builder gives it from the model
(:meth:`SeparableScoreEnergy.bind_sizes`); used on its own, the critic takes it from its first input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ebmssl.energies.base import Energy
from ebmssl.registry import Positive, register_energy


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


def first_layer_width(state_dict, prefix: str) -> int | None:  # noqa: ANN001
    """Input width of the saved linear layer under ``prefix`` (plain or spectrally normalised weight)."""
    for key, value in state_dict.items():
        if key.startswith(prefix) and key.endswith(("weight", "original")) and getattr(value, "dim", lambda: 0)() == 2:
            return int(value.shape[1])
    return None


class SeparableScoreEnergy(Energy):
    """Base of critics with f(a, b) = <u(a), v(b)>: subclasses give the feature maps ``u`` and ``v``."""

    learned: bool = False  # has parameters whose shape depends on the embedding width
    input_dim: int | None = None  # the embedding width a learned critic is built for (its `dim:`)

    def _build(self, dim: int) -> None:
        """Create the learned maps for embeddings of width ``dim`` (learned critics override this)."""

    def _dim_in_state(self, state_dict, prefix: str) -> int | None:  # noqa: ANN001
        """The width a saved state was built for (learned critics override this)."""
        return None

    def ensure_dim(self, dim: int, like: torch.Tensor | None = None) -> None:
        """Build the learned maps for width ``dim`` (on ``like``'s device and dtype), or check the width."""
        if not self.learned:
            return
        if self.input_dim is None:
            if dim <= 0:
                raise ValueError(f"dim must be positive, got {dim}")
            self._build(int(dim))
            self.input_dim = int(dim)
            if like is not None:
                self.to(device=like.device, dtype=like.dtype)
        elif self.input_dim != dim:
            raise ValueError(
                f"the critic was built with dim={self.input_dim} but the embeddings have width {dim}; remove the "
                f"energy's `dim:` (the builder takes it from the model) or set it to the projector's output_dim"
            )

    def bind_sizes(self, sizes) -> None:  # noqa: ANN001  (ebmssl.strategies.base.Sizes)
        """Size (or check) a learned critic from the model's widths; the builder calls this."""
        if not self.learned:
            return
        widths = sorted({int(sizes.online_dim), int(sizes.target_dim)})
        if len(widths) > 1:
            raise ValueError(
                f"a learned critic compares embeddings of one width, but the online views have width "
                f"{sizes.online_dim} and the targets {sizes.target_dim}; give the predictor the projector's output_dim"
            )
        self.ensure_dim(widths[0])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.learned and self.input_dim is None:
            dim = self._dim_in_state(state_dict, prefix)
            saved = [v for k, v in state_dict.items() if k.startswith(prefix) and v.is_floating_point()]
            if dim is not None:
                self.ensure_dim(dim, saved[0] if saved else None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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

    def __init__(self, temperature: Positive = 1.0, normalize: bool = False, eps: float = 1e-12) -> None:
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
    learned = True

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.weight: nn.Parameter | None = None
        if dim is not None:
            self.ensure_dim(dim)

    def _build(self, dim: int) -> None:
        self.weight = nn.Parameter(torch.eye(dim))

    def _dim_in_state(self, state_dict, prefix: str) -> int | None:  # noqa: ANN001
        weight = state_dict.get(prefix + "weight")
        return int(weight.shape[0]) if weight is not None else None

    def features_a(self, a: torch.Tensor) -> torch.Tensor:
        self.ensure_dim(int(a.shape[-1]), a)
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
    learned = True

    def __init__(self, dim: int | None = None, hidden_dim: int = 256, output_dim: int = 32, num_layers: int = 1) -> None:
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        self.hidden_dim, self.output_dim, self.num_layers = hidden_dim, output_dim, num_layers
        self.g: nn.Module | None = None
        self.h: nn.Module | None = None
        if dim is not None:
            self.ensure_dim(dim)

    def _build(self, dim: int) -> None:
        self.g = critic_mlp(dim, self.hidden_dim, self.output_dim, self.num_layers)
        self.h = critic_mlp(dim, self.hidden_dim, self.output_dim, self.num_layers)

    def _dim_in_state(self, state_dict, prefix: str) -> int | None:  # noqa: ANN001
        return first_layer_width(state_dict, prefix + "g.0.")

    def features_a(self, a: torch.Tensor) -> torch.Tensor:
        self.ensure_dim(int(a.shape[-1]), a)
        return self.g(a)

    def features_b(self, b: torch.Tensor) -> torch.Tensor:
        self.ensure_dim(int(b.shape[-1]), b)
        return self.h(b)
