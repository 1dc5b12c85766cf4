"""SIGReg: sketched isotropic Gaussian regularisation with the Epps-Pulley statistic (LeJEPA).

Balestriero & LeCun 2025, "LeJEPA: Provable and Scalable Self-Supervised Learning Without the
Heuristics" (arXiv:2511.08544); official code https://github.com/rbalestr-lab/lejepa
(``MINIMAL.md: SIGReg`` and the training loop there; ``lejepa/univariate/epps_pulley.py: EppsPulley``;
``lejepa/multivariate/slicing.py: SlicingUnivariateTest``).

For K random unit directions a_k (the columns of A, drawn from N(0, I) and normalised), each view's
embeddings x (N, D) are projected to s = x a_k and compared with N(0, 1) through the empirical
characteristic function phi_N(t) = (1/N) sum_n exp(i t s_n):

    EP_k = N * integral |phi_N(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt

integrated with the trapezoid rule on ``knots`` points of [0, t_max], doubled by symmetry (official
defaults: 17 knots, t_max = 3). SIGReg is the mean of EP_k over the K slices (official MINIMAL.md:
K = 256), then the mean over views. The same directions serve every view of a step.

Directions: A is a pure function of (``seed``, step), drawn on the device by a counter-based generator
(:func:`random_directions`: SplitMix64 hashes of (seed, step, index), Box-Muller), so a run is reproducible
and every process uses the same directions as long as the steps agree (the step is a device buffer saved
with ``state_dict``, advanced in ``update`` and set by ``set_progress``: no step reads it on the host, and
``torch.compile`` sees it as a tensor, so it does not recompile per step). The official library seeds a
torch generator on the input's device with its own step counter synchronised by an all-reduce MAX; the
directions follow the same law (normalised N(0, I) columns) from another random stream.
Across processes the projections are gathered with gradient, so the statistic is the one of the
global batch (the official code all-reduces the ECF means, which is the same value).

LeJEPA's prediction term (MINIMAL.md: ``(proj.mean(0) - proj).square().mean()``; the paper: every
view predicts the mean embedding of the global views) is expressed with the ``squared_euclidean``
energy (``mean_over_dims: true``) and ``center_target: true`` here: the transform replaces the target
with the mean of the first ``num_global_views`` online views (when null: the view pipeline's global
views, given by the builder, or every view when the objective is used alone; the centre keeps
its gradient, as in LeJEPA) and pairs every online view with it, so with ``pair_reduction: mean`` the
energy term is ``mean_{v, n, d} (c_{n,d} - z_{v,n,d})^2``. The weights ``1 - lambda`` and ``lambda``
go to ``energy_weight`` and this strategy's ``weight``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ebmssl import distributed
from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Progress, Sizes, Strategy, ViewBatch


def epps_pulley_grid(
    knots: int = 17, t_max: float = 3.0, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integration points t on [0, t_max], the N(0, 1) characteristic function exp(-t^2/2) there, and
    the trapezoid weights (doubled for the negative half) times the window exp(-t^2/2)."""
    t = torch.linspace(0.0, t_max, knots, dtype=dtype, device=device)
    step = t_max / (knots - 1)
    index = torch.arange(knots, device=device)
    # the end points' half weight by masked_fill: ``weights[0] = step`` copies the scalar from the host, blocking
    weights = torch.full((knots,), 2 * step, dtype=dtype, device=device).masked_fill((index == 0) | (index == knots - 1), step)
    phi = torch.exp(-0.5 * t.square())
    return t, phi, weights * phi


def epps_pulley(projections: torch.Tensor, knots: int = 17, t_max: float = 3.0) -> torch.Tensor:
    """Epps-Pulley statistic of each column of ``projections`` (N, K) against N(0, 1): shape (K,)."""
    n = projections.shape[0]
    t, phi, weights = epps_pulley_grid(knots, t_max, projections.dtype, projections.device)
    angles = projections.unsqueeze(-1) * t  # (N, K, knots)
    error = (torch.cos(angles).mean(dim=0) - phi).square() + torch.sin(angles).mean(dim=0).square()
    return (error @ weights) * n


_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """A 64-bit constant as the int64 torch stores (two's complement)."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 ``x`` (torch's ``>>`` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser (Steele et al. 2014) on int64 tensors (products wrap modulo 2^64)."""
    x = x + _signed(0x9E3779B97F4A7C15)
    x = (x ^ _shift_right(x, 30)) * _signed(0xBF58476D1CE4E5B9)
    x = (x ^ _shift_right(x, 27)) * _signed(0x94D049BB133111EB)
    return x ^ _shift_right(x, 31)


def random_directions(
    dim: int, num_slices: int, seed: int, step: torch.Tensor | int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """(dim, num_slices) unit-norm Gaussian directions (float32), a pure function of (seed, step).

    Counter-based: uniforms are SplitMix64 hashes of (seed, step, index), turned Gaussian by Box-Muller, all
    on the device of ``step`` (a tensor, e.g. the strategy's step buffer) or ``device``. Nothing is read on
    the host or copied from it, and a traced step sees the step as a tensor input (no recompile per step).
    """
    if not isinstance(step, torch.Tensor):
        step = torch.full((), int(step), dtype=torch.long, device=device)
    count = dim * num_slices
    key = _splitmix64(_splitmix64(step.to(torch.long) + _signed(int(seed) * 0xD1B54A32D192ED03)))
    bits = _splitmix64(key + torch.arange(2 * count, device=step.device, dtype=torch.long))
    uniform = (_shift_right(bits, 11).to(torch.float64) + 0.5) * 2.0**-53  # (0, 1), 53 random bits
    radius = torch.sqrt(-2.0 * torch.log(uniform[:count]))
    directions = (radius * torch.cos(2 * math.pi * uniform[count:])).to(torch.float32).view(dim, num_slices)
    return directions / directions.norm(p=2, dim=0)


def sigreg_statistic(x: torch.Tensor, directions: torch.Tensor, knots: int = 17, t_max: float = 3.0) -> torch.Tensor:
    """SIGReg of the rows of ``x`` (N, D): mean over the columns of ``directions`` (D, K) of Epps-Pulley."""
    return epps_pulley(x @ directions, knots, t_max).mean()


@register_strategy("sigreg")
class SIGReg(Strategy):
    """Sketched isotropic Gaussian regularisation: Epps-Pulley tests on random 1-D projections (LeJEPA 2025).

    Mean over online views of the mean over ``num_slices`` directions of the Epps-Pulley statistic of
    the (unnormalised) embeddings against N(0, 1). ``center_target`` turns on LeJEPA's prediction
    target (the mean of the first ``num_global_views`` online views; see the module docstring).
    ``num_global_views`` left null takes the view pipeline's number of global views from the builder
    (:meth:`bind_sizes`), or every online view when the objective is used without a model.
    """

    family = "capacity"

    def __init__(
        self,
        num_slices: int = 256,
        knots: int = 17,
        t_max: float = 3.0,
        seed: int = 0,
        center_target: bool = False,
        num_global_views: int | None = None,
    ) -> None:
        super().__init__()
        if num_slices < 1:
            raise ValueError(f"num_slices must be at least 1, got {num_slices}")
        if knots < 2:
            raise ValueError(f"knots must be at least 2, got {knots}")
        if t_max <= 0:
            raise ValueError(f"t_max must be positive, got {t_max}")
        if num_global_views is not None and num_global_views < 1:
            raise ValueError(f"num_global_views must be at least 1 (or null for all views), got {num_global_views}")
        self.num_slices = num_slices
        self.knots = knots
        self.t_max = t_max
        self.seed = seed
        self.center_target = center_target
        self.num_global_views = num_global_views
        self.bound_global_views: int | None = None
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # chooses the directions (on the device)

    def bind_sizes(self, sizes: Sizes) -> None:
        self.bound_global_views = int(sizes.num_global_views)

    def directions(
        self, dim: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """This step's (dim, num_slices) directions, identical on every process at the same step; made on the
        step buffer's device from the buffer itself (no host value enters a traced step)."""
        directions = random_directions(dim, self.num_slices, self.seed, self.step)
        return directions.to(device=device, dtype=dtype)

    def statistic(self, x: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        projections = distributed.gather(x @ directions)
        return epps_pulley(projections, self.knots, self.t_max).mean()

    def transform(self, batch: ViewBatch) -> ViewBatch:
        if not self.center_target:
            return batch
        count = self.num_global_views or self.bound_global_views or len(batch.online)
        if count > len(batch.online):
            raise ValueError(f"num_global_views={count} but the batch has only {len(batch.online)} online views")
        center = torch.stack(batch.online[:count]).mean(dim=0)
        return batch.replace(
            target=[center], pairs=[(i, 0) for i in range(len(batch.online))], has_target=True, positive_weights={}
        )

    def loss(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor:
        first = batch.online[0]
        directions = self.directions(first.shape[-1], first.device, first.dtype)
        return batch.over_online_views(lambda z: self.statistic(z, directions))

    @torch.no_grad()
    def update(self, batch: ViewBatch) -> None:
        self.step.add_(1)  # on the device

    def set_progress(self, progress: Progress) -> None:
        self.step.fill_(int(progress.step))  # outside the traced step; ``fill_`` from a Python int: no device read
