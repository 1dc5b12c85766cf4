"""A latent-variable predictive architecture whose latent has limited capacity (docs/design.md, "Beyond joint embedding").

    E(x, y) = min_z  D(pred(s_x, z), s_y) + beta R(z),      s_x = enc(x), s_y = enc'(y)

The minimisation over z is amortised: an inference network reads (s_x, s_y) and outputs the statistics
of q(z | x, y); the registered latent regulariser (``ebmssl.strategies.capacity.latent``: ``gaussian_kl``,
``l1_sparsity``, ``noisy_bottleneck``) turns them into z (sampled with the batch generator in training,
the mean when scoring) and a per-sample cost R. ``beta`` is the capacity knob: at 0 a wide z copies s_y
and every target gets low energy (the latent form of collapse); very large, z carries nothing and the
predictor averages the modes of a multimodal target; in between, z names the mode and only plausible
targets get low energy. ``tools/latent_demo.py`` measures the three regimes (docs/latent_variable.md).

On images (``model.architecture: latent_variable``) x and y are the first two views; s_x is the
backbone + projector output; s_y comes from a momentum copy of them (``target_encoder: {momentum: ...}``,
asymmetry against representation collapse, as I-JEPA) and receives no gradient. The objective's energy
is D on the rows (pred, s_y), handed over as two views (``pairs: [[0, 1]]``); the architecture adds ``beta * mean_n R(z_n)`` as the term ``latent``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ebmssl.models.architectures._common import check_section, sub_mapping
from ebmssl.models.architectures.base import Architecture, LearnerOutput, full_precision
from ebmssl.models.architectures.joint_embedding import Branch
from ebmssl.models.collapse_guard import LATENT_CAPACITY
from ebmssl.models.target import TargetBranch, build_target_encoder
from ebmssl.registry import LATENT_REGULARISERS, ConfigError, register_architecture
from ebmssl.strategies.capacity.latent import LatentRegulariser


def _mlp(inputs: int, hidden: int, outputs: int, layers: int = 2) -> nn.Sequential:
    modules: list[nn.Module] = []
    width = inputs
    for _ in range(layers - 1):
        modules += [nn.Linear(width, hidden), nn.GELU()]
        width = hidden
    modules.append(nn.Linear(width, outputs))
    return nn.Sequential(*modules)


@dataclass
class LatentPrediction:
    prediction: torch.Tensor  # (N, D)
    latent: torch.Tensor  # (N, latent_dim)
    penalty: torch.Tensor  # (N,) the regulariser's cost R(z)


class LatentVariablePredictor(nn.Module):
    """pred(s_x, z) with z inferred from (s_x, s_y) by an amortised network and limited by a regulariser.

    ``latent_dim = 0`` is the deterministic predictor pred(s_x) (no latent, nothing to infer).
    """

    def __init__(self, dim: int, latent_dim: int, regulariser: LatentRegulariser, beta: float = 1.0, hidden_dim: int = 128, num_layers: int = 3) -> None:
        super().__init__()
        if latent_dim < 0 or beta < 0:
            raise ValueError(f"latent_dim and beta must be non-negative, got {latent_dim} and {beta}")
        self.latent_dim = latent_dim
        self.regulariser = regulariser
        self.beta = float(beta)
        self.decoder = _mlp(dim + latent_dim, hidden_dim, dim, num_layers)
        self.inference = _mlp(2 * dim, hidden_dim, regulariser.stats_dim(latent_dim), num_layers) if latent_dim else None

    def forward(self, sx: torch.Tensor, sy: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True) -> LatentPrediction:
        if self.inference is None:
            empty = sx.new_zeros(sx.shape[0], 0)
            return LatentPrediction(self.decoder(sx), empty, sx.new_zeros(sx.shape[0]))
        stats = self.inference(torch.cat([sx, sy], dim=-1))
        z = self.regulariser.sample(stats, generator) if sample else self.regulariser.infer(stats)
        return LatentPrediction(self.decoder(torch.cat([sx, z], dim=-1)), z, self.regulariser.penalty(stats))

    def energy(self, sx: torch.Tensor, sy: torch.Tensor, distance: nn.Module, refine_steps: int = 0, refine_lr: float = 0.05) -> torch.Tensor:
        """(N,) the energy of the pairs (s_x, s_y).

        ``refine_steps = 0``: the amortised energy D(pred(s_x, z*), s_y) + beta R(q), z* the inferred mean.
        Otherwise E(x, y) = min_z D(pred(s_x, z), s_y) + beta R_point(z), minimised by ``refine_steps``
        Adam steps on z started at z* (the regulariser's point cost: |z|^2 / 2 for gaussian_kl, |z|_1 for
        l1_sparsity, a box for noisy_bottleneck). Parameters receive no gradient.
        """
        if self.inference is None or refine_steps == 0:
            with torch.no_grad():
                out = self(sx, sy, sample=False)
                return distance.aligned(out.prediction, sy) + self.beta * out.penalty
        with torch.no_grad():
            z0 = self.regulariser.infer(self.inference(torch.cat([sx, sy], dim=-1)))
        z = z0.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([z], lr=refine_lr)

        def cost(latent: torch.Tensor) -> torch.Tensor:
            prediction = self.decoder(torch.cat([sx, latent], dim=-1))
            return distance.aligned(prediction, sy) + self.beta * self.regulariser.point_penalty(latent)

        for _ in range(refine_steps):
            optimiser.zero_grad(set_to_none=True)
            grad = torch.autograd.grad(cost(z).sum(), z)[0]
            z.grad = grad
            optimiser.step()
            with torch.no_grad():
                z.copy_(self.regulariser.project(z))
        with torch.no_grad():
            return cost(z)

    def collapse_mechanisms(self) -> list[tuple[str, str]]:
        if self.inference is not None and self.regulariser.limits_capacity(self.beta):
            name = getattr(self.regulariser, "registered_name", type(self.regulariser).__name__)
            return [(LATENT_CAPACITY, f"latent capacity limited by {name} (beta {self.beta:g})")]
        return []

    def unlimited_latent(self) -> str | None:
        """Why z can carry anything (latent collapse: every target reachable, every energy low), or None.

        The collapse guard refuses such a model unless ``objective.allow_collapse`` is set."""
        if self.inference is None or self.regulariser.limits_capacity(self.beta):
            return None
        name = getattr(self.regulariser, "registered_name", type(self.regulariser).__name__)
        return f"the latent z ({self.latent_dim} dimensions, {name} at beta {self.beta:g}) has no capacity limit"


class LatentVariableJEPA(Architecture):
    """Encoder + projector (online and momentum target) and a capacity-limited latent predictor, on view pairs."""

    def __init__(
        self, backbone: nn.Module, projector: nn.Module, predictor: LatentVariablePredictor, objective: nn.Module, target: TargetBranch
    ) -> None:
        super().__init__()
        self.online = Branch(backbone, projector)
        self.predictor = predictor
        self.attach(objective, target)

    @property
    def encoder(self) -> nn.Module:
        return self.online.backbone

    @property
    def online_branch(self) -> nn.Module:
        return self.online

    def collapse_mechanisms(self) -> list[tuple[str, str]]:
        return [*super().collapse_mechanisms(), *self.predictor.collapse_mechanisms()]

    def unlimited_latent(self) -> str | None:
        return self.predictor.unlimited_latent()

    def embed(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [self.online.projector(self.online.backbone(v)) for v in views]

    def forward(self, views: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> LearnerOutput:
        if len(views) < 2:
            raise ValueError("the latent_variable architecture predicts view 2 from view 1: give it two views")
        features = self.online.backbone(views[0])
        sx = self.online.projector(features)
        with torch.no_grad():  # the momentum copy of backbone + projector
            sy = self.target.branch.projector(self.target.branch.backbone(views[1]))
        out = self.predictor(sx, sy, generator)
        latent_term = self.predictor.beta * full_precision(out.penalty).mean()
        return self.score([out.prediction, sy], None, features, extra_terms={"latent": latent_term})


def build_latent_predictor(spec: Mapping[str, Any], dim: int, where: str) -> LatentVariablePredictor:
    spec = dict(spec)
    check_section(spec, ("latent_dim", "regulariser", "beta", "hidden_dim", "num_layers"), where, "latent")
    regulariser = LATENT_REGULARISERS.build(spec.pop("regulariser", {"name": "gaussian_kl"}), where=f"{where}.latent.regulariser")
    try:
        return LatentVariablePredictor(dim, regulariser=regulariser, **{"latent_dim": 4, **spec})
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}.latent: {error}.") from error


@register_architecture("latent_variable")
def build_latent_variable(
    *,
    objective: nn.Module,
    num_global: int,
    in_channels: int,
    location: str = "model",
    backbone: Mapping[str, Any] | None = None,
    projector: Any = None,
    latent: Mapping[str, Any] | None = None,
    target_encoder: Mapping[str, Any] | None = None,
) -> LatentVariableJEPA:
    """Latent-variable JEPA on view pairs: momentum target, capacity-limited amortised latent."""
    from ebmssl.models import build_backbone, build_heads

    where = location
    if backbone is None:
        raise ConfigError(f"{where}: no `backbone:`. Add e.g. `backbone: {{name: small_resnet}}`.")
    spec = dict(backbone)
    spec.setdefault("in_channels", in_channels)
    encoder = build_backbone(spec, where=f"{where}.backbone")
    heads = build_heads(projector, encoder.output_dim, where=f"{where}.projector")
    predictor = build_latent_predictor(sub_mapping({"latent": latent}, "latent", where), heads.output_dim, where)
    spec_target = target_encoder if target_encoder is not None else {"momentum": 0.996, "final_momentum": 1.0}
    if not isinstance(spec_target, Mapping):
        raise ConfigError(f"{where}.target_encoder: expected a momentum mapping, e.g. `{{momentum: 0.996, final_momentum: 1.0}}`, got {spec_target!r}.")
    target = build_target_encoder(spec_target, f"{where}.target_encoder", schedule="cosine")
    return LatentVariableJEPA(encoder, heads, predictor, objective, target)
