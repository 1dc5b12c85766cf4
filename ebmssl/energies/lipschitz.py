"""Lipschitz critic for the Wasserstein dependency measure (Ozair et al. 2019, WPC).

E(a, b) = -f(a, b), f(a, b) = <g(a), h(b)>, where g and h are ReLU MLPs whose linear layers are
spectrally normalised (``torch.nn.utils.parametrizations.spectral_norm``: W / sigma_max(W), sigma
estimated by power iteration). ReLU is 1-Lipschitz, so g and h are 1-Lipschitz and f is Lipschitz in
each argument: |f(a, b) - f(a', b)| <= |h(b)| |a - a'| (and symmetrically). ``spectral_norm: false``
gives the plain separable critic, to be constrained with the ``wpc`` strategy's gradient penalty
instead (Ozair et al. use a gradient penalty; spectral norm is the alternative from the GAN
literature, Miyato et al. 2018).

Note: in training mode each forward runs one power iteration and so slightly changes the normalised
weights; ``aligned`` equals the diagonal of ``pairwise`` exactly in eval mode (or within one call).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from ebmssl.energies.critics import SeparableScoreEnergy, critic_mlp, first_layer_width
from ebmssl.registry import register_energy


def spectrally_normalised(module: nn.Module) -> nn.Module:
    """Apply spectral normalisation to every ``nn.Linear`` inside ``module`` (in place); returns it."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, _spectral_norm(child))
        else:
            spectrally_normalised(child)
    return module


@register_energy("lipschitz_critic")
class LipschitzCritic(SeparableScoreEnergy):
    """Separable MLP critic, spectrally normalised so f is Lipschitz in each argument (Ozair et al. 2019).

    E(a, b) = -<g(a), h(b)>; ``normalize: true`` l2-normalises the inputs first (bounding |h(b)|
    and so the Lipschitz constant of f on the data).
    """

    example_config = {"dim": 8, "hidden_dim": 16, "output_dim": 8}
    learned = True

    def __init__(
        self,
        dim: int | None = None,
        hidden_dim: int = 256,
        output_dim: int = 64,
        num_layers: int = 1,
        spectral_norm: bool = True,
        normalize: bool = False,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        self.hidden_dim, self.output_dim, self.num_layers = hidden_dim, output_dim, num_layers
        self.spectral_norm = spectral_norm
        self.normalize = normalize
        self.eps = eps
        self.g: nn.Module | None = None
        self.h: nn.Module | None = None
        if dim is not None:
            self.ensure_dim(dim)

    def _build(self, dim: int) -> None:
        self.g = critic_mlp(dim, self.hidden_dim, self.output_dim, self.num_layers)
        self.h = critic_mlp(dim, self.hidden_dim, self.output_dim, self.num_layers)
        if self.spectral_norm:
            spectrally_normalised(self.g)
            spectrally_normalised(self.h)

    def _dim_in_state(self, state_dict, prefix: str) -> int | None:  # noqa: ANN001
        return first_layer_width(state_dict, prefix + "g.0.")

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1, eps=self.eps) if self.normalize else x

    def features_a(self, a: torch.Tensor) -> torch.Tensor:
        self.ensure_dim(int(a.shape[-1]), a)
        return self.g(self._prepare(a))

    def features_b(self, b: torch.Tensor) -> torch.Tensor:
        self.ensure_dim(int(b.shape[-1]), b)
        return self.h(self._prepare(b))
