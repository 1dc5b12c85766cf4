"""Capacity limits on an explicit latent variable z (the latent-variable predictive architecture).

A latent-variable predictor scores ``E(x, y) = min_z D(pred(s_x, z), s_y) + beta R(z)``. If z can carry
anything (``beta = 0``, a wide noiseless z) it copies y and every target gets low energy: the latent form
of collapse. Limiting what z can carry bounds the volume of low-energy targets to the set the predictor
can reach from s_x with an affordable z (LeCun 2022, "A Path Towards Autonomous Machine Intelligence",
section 4.5; docs/design.md, "Beyond joint embedding").

A regulariser turns the inference network's statistics into a latent (``sample``; the mean in ``infer``
for a deterministic energy) and a per-sample cost ``penalty`` (N,), in nats where it is a KL:

* ``gaussian_kl``: q(z | x, y) = N(mu, diag sigma^2), z = mu + sigma eps, R = KL(q || N(0, I)) =
  1/2 sum_j (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1) (Kingma & Welling 2014);
* ``l1_sparsity``: z = mu, R = sum_j |z_j| (a sparse code);
* ``noisy_bottleneck``: z = tanh(mu) + sigma_0 eps with a fixed sigma_0, R = 0: a bounded, noisy channel
  of ``latent_dim`` dimensions carries at most latent_dim / 2 log(1 + 1 / sigma_0^2) nats.

Noise comes from the caller's generator, on its device (the batch's device generator during training).
"""

from __future__ import annotations

import torch
from torch import nn

from ebmssl.registry import register_latent_regulariser


def _noise(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device).to(device=like.device, dtype=like.dtype)


class LatentRegulariser(nn.Module):
    """Base: ``stats_dim(d)`` statistics per sample for a d-dimensional latent; sample, infer, penalty."""

    family = "capacity"

    def stats_dim(self, latent_dim: int) -> int:
        return latent_dim

    def infer(self, stats: torch.Tensor) -> torch.Tensor:
        """The deterministic latent (no noise) used to score a pair."""
        return stats

    def sample(self, stats: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.infer(stats)

    def penalty(self, stats: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def point_penalty(self, z: torch.Tensor) -> torch.Tensor:
        """(N,) the cost of a point latent z when the energy is minimised over z directly (MAP form)."""
        raise NotImplementedError

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Back into the latent's domain after a gradient step (identity unless z is bounded)."""
        return z

    def prior_sample(self, shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws from the prior the cost refers to (sampling futures at test time): N(0, I) by default."""
        return _noise(torch.Size(shape), like, generator)

    def limits_capacity(self, beta: float) -> bool:
        """Whether z's information is bounded at weight ``beta`` (a cost that counts, or a noisy channel)."""
        return beta > 0


@register_latent_regulariser("gaussian_kl")
class GaussianKL(LatentRegulariser):
    """KL(N(mu, sigma^2) || N(0, I)) summed over the latent dimensions; z = mu + sigma eps."""

    def stats_dim(self, latent_dim: int) -> int:
        return 2 * latent_dim

    @staticmethod
    def split(stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = stats.chunk(2, dim=-1)
        return mu, log_var.clamp(-20.0, 10.0)

    def infer(self, stats: torch.Tensor) -> torch.Tensor:
        return self.split(stats)[0]

    def sample(self, stats: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, log_var = self.split(stats)
        return mu + torch.exp(0.5 * log_var) * _noise(mu.shape, mu, generator)

    def penalty(self, stats: torch.Tensor) -> torch.Tensor:
        mu, log_var = self.split(stats)
        return 0.5 * (mu.square() + log_var.exp() - log_var - 1.0).sum(dim=-1)

    def point_penalty(self, z: torch.Tensor) -> torch.Tensor:
        """-log N(z; 0, I) up to a constant: |z|^2 / 2 (the KL's mean term)."""
        return 0.5 * z.square().sum(dim=-1)


@register_latent_regulariser("l1_sparsity")
class L1Sparsity(LatentRegulariser):
    """Sparse code: z = mu, R = |z|_1."""

    def penalty(self, stats: torch.Tensor) -> torch.Tensor:
        return stats.abs().sum(dim=-1)

    def prior_sample(self, shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Laplace(0, 1), whose -log density is |z|_1 up to a constant: the difference of two Exp(1) draws."""
        device = generator.device if generator is not None else like.device
        u = torch.rand((2, *shape), generator=generator, device=device).clamp_min(1e-12)
        return (-u[0].log() + u[1].log()).to(device=like.device, dtype=like.dtype)

    def point_penalty(self, z: torch.Tensor) -> torch.Tensor:
        return z.abs().sum(dim=-1)


@register_latent_regulariser("noisy_bottleneck")
class NoisyBottleneck(LatentRegulariser):
    """z = tanh(mu) + noise_std eps, no penalty: capacity set by the dimension and the noise."""

    def __init__(self, noise_std: float = 0.5) -> None:
        super().__init__()
        if noise_std <= 0:
            raise ValueError(f"noise_std must be positive, got {noise_std}")
        self.noise_std = noise_std

    def infer(self, stats: torch.Tensor) -> torch.Tensor:
        return torch.tanh(stats)

    def sample(self, stats: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.tanh(stats)
        return z + self.noise_std * _noise(z.shape, z, generator)

    def penalty(self, stats: torch.Tensor) -> torch.Tensor:
        return stats.new_zeros(stats.shape[0])

    def point_penalty(self, z: torch.Tensor) -> torch.Tensor:
        return z.new_zeros(z.shape[0])

    def project(self, z: torch.Tensor) -> torch.Tensor:
        return z.clamp(-1.0, 1.0)

    def prior_sample(self, shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A point of the box [-1, 1]^d, uniformly, plus the channel's noise."""
        device = generator.device if generator is not None else like.device
        box = 2 * torch.rand(shape, generator=generator, device=device) - 1
        return box.to(device=like.device, dtype=like.dtype) + self.noise_std * _noise(torch.Size(shape), like, generator)

    def limits_capacity(self, beta: float) -> bool:
        """Always: the noise bounds what a bounded z can carry, whatever beta."""
        return True
