"""A latent-variable predictive world model on clips (LeCun 2022, "A Path Towards Autonomous Machine
Intelligence", sections 4.4-4.5; docs/design.md, "Video clips and actions").

Frames are encoded one by one, s_t = proj(enc(x_t)) (:class:`FrameEncoder`: any registered backbone), or, with
``embedding: tokens`` (a ViT backbone), as a map: every patch token projected by the same head and the results
concatenated in grid order, s_t = [proj(tok_1); ...; proj(tok_L)], so each dimension belongs to one place and a
per-dimension variance term makes every place vary across samples (a pooled vector may keep only what the
item is, the part of a frame that is perfectly predictable, and drop where it is; eb_jepa's video examples and
DINO-WM predict feature maps for the same reason). The
model predicts the next embedding from the last ``context_frames`` embeddings, the action taken (the
action-conditioned variant) and a latent z that names what the past does not determine:

    h_t = W [s_{t-c+1}; ...; s_t; emb(a_t)]                      (the context, one linear map)
    E(x_{<=t}, x_{t+1}) = min_z  D(pred(h_t, z), s'_{t+1}) + beta R(z)

pred, the amortised inference q(z | h_t, s'_{t+1}) and the capacity cost R are latent_variable.py's
:class:`LatentVariablePredictor` with a registered latent regulariser (``gaussian_kl``: R = KL in nats;
``l1_sparsity``; ``noisy_bottleneck``). ``latent_dim: 0`` is the deterministic predictor pred(h_t)
(which averages the K plausible futures); ``beta: 0`` with ``gaussian_kl`` is the unlimited latent (z copies
the target and every future gets low energy: refused by the collapse guard unless
``objective.allow_collapse: true``). Targets s'_{t+1}: the encoder itself (``target_encoder: shared``, with
gradient; variance/covariance terms in the objective keep it from collapsing, as eb_jepa's video examples)
or a momentum copy (``{momentum: ...}``, no gradient). z's inference sees the target detached.

The objective receives the rows (pred, s'_{t+1}) of every transition of the clip as two views (``pairs:
[[0, 1]]``: the energy D, and e.g. VICReg's variance/covariance on each); the architecture adds
``beta * mean R(z)`` as the term ``latent``. Views: ``[clip (B, T, C, H, W), ..., actions (B, T - 1)]``
(``clip_views``; the actions only for ``actions:``). The public API for measurements and planning:
:meth:`encode`, :meth:`context`, :meth:`predict`, :meth:`energy`, :meth:`infer_latent`,
:meth:`sample_latent`, :meth:`transition_energy`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ebmssl.models.architectures._common import check_section, sub_mapping
from ebmssl.models.architectures.base import Architecture, LearnerOutput, full_precision
from ebmssl.models.architectures.frame_encoder import FrameEncoder
from ebmssl.models.architectures.joint_embedding import Branch
from ebmssl.models.architectures.latent_variable import LatentVariablePredictor, build_latent_predictor
from ebmssl.models.target import TargetBranch, build_target_encoder
from ebmssl.registry import ConfigError, register_architecture


class Context(nn.Module):
    """h_t = W [s_{t-c+1}; ...; s_t; emb(a_t)]: the last ``frames`` embeddings and the action's embedding
    (``num_actions`` = 0: no action) mixed into one state of the embedding's width."""

    def __init__(self, dim: int, frames: int, num_actions: int = 0, action_dim: int = 8) -> None:
        super().__init__()
        self.frames, self.num_actions = int(frames), int(num_actions)
        self.actions = nn.Embedding(num_actions, action_dim) if num_actions else None
        self.mix = nn.Linear(frames * dim + (action_dim if num_actions else 0), dim)

    def forward(self, window: torch.Tensor, action: torch.Tensor | None = None) -> torch.Tensor:
        """``window`` (..., frames, D) oldest first, ``action`` (...,) int64 -> (..., D)."""
        parts = [window.flatten(-2)]
        if self.actions is not None:
            if action is None:
                raise ValueError("the action-conditioned world model needs the actions (clip_views with `actions: true`)")
            parts.append(self.actions(action))
        return self.mix(torch.cat(parts, dim=-1))


def windows(embeddings: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, T, D) -> (B, T - frames, frames, D): the context of every transition t -> t + 1, t = frames - 1 .. T - 2."""
    steps = embeddings.shape[1] - frames
    return torch.stack([embeddings[:, k : k + steps] for k in range(frames)], dim=2)


class WorldModel(Architecture):
    """Frame encoder + projector (online; momentum or shared target), the context and the latent predictor."""

    objective_views = 2  # the objective sees (predictions, targets), whatever the number of clip views

    def __init__(
        self, backbone: nn.Module, projector: nn.Module, context: Context, predictor: LatentVariablePredictor,
        objective: nn.Module, target: TargetBranch, tokens: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.tokens = bool(tokens)  # s_t = the projected patch-token map, flattened (embedding: tokens)
        self.online = Branch(FrameEncoder(backbone), projector)
        self.context_net = context
        self.predictor = predictor
        self.attach(objective, target)

    # -- the contract ------------------------------------------------------------------------------
    @property
    def encoder(self) -> FrameEncoder:
        return self.online.backbone

    @property
    def online_branch(self) -> nn.Module:
        return self.online

    @property
    def context_frames(self) -> int:
        return self.context_net.frames

    @property
    def latent_dim(self) -> int:
        return self.predictor.latent_dim

    @property
    def conditioned_on_actions(self) -> bool:
        return self.context_net.actions is not None

    def collapse_mechanisms(self) -> list[tuple[str, str]]:
        return [*super().collapse_mechanisms(), *self.predictor.collapse_mechanisms()]

    def unlimited_latent(self) -> str | None:
        return self.predictor.unlimited_latent()

    def embed(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The embeddings of the first two frames of the first clip view (consecutive frames as two views)."""
        s = self.encode(views[0])
        return [s[:, 0], s[:, 1]]

    # -- the public API ----------------------------------------------------------------------------
    def encode(self, clips: torch.Tensor) -> torch.Tensor:
        """Online embeddings of every frame: (N, T, C, H, W) -> (N, T, D)."""
        return self._embed(self.online, clips)[1]

    def _embed(self, branch: nn.Module, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``branch``'s (features (N, T, F) for the probe, embeddings s (N, T, D)) of every frame."""
        if self.tokens:
            patches = branch.backbone.frame_tokens(clips)  # (N, T, L, F)
            s = branch.projector(patches.flatten(0, 2)).view(*patches.shape[:2], -1)  # the same head on every token
            return patches.mean(dim=2), s
        features = branch.backbone.frames(clips)
        return features, branch.projector(features.flatten(0, 1)).view(*features.shape[:2], -1)

    def target_embeddings(self, clips: torch.Tensor) -> torch.Tensor:
        """The targets s'_t of every frame (N, T, D): the momentum copy's, or the online ones."""
        if not self.target.independent:
            return self.target.finish([self.encode(clips)])[0]
        with torch.no_grad():
            return self._embed(self.target.branch, clips)[1]

    def context(self, window: torch.Tensor, action: torch.Tensor | None = None) -> torch.Tensor:
        """h (N, D) from the last ``context_frames`` embeddings (N, c, D), oldest first, and the action (N,)."""
        return self.context_net(window, action)

    def predict(self, window: torch.Tensor, action: torch.Tensor | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """The predicted next embedding (N, D) from the context window (N, c, D), the action (N,) and z
        (N, latent_dim); ``z`` None: the prior's centre (zeros)."""
        h = self.context(window, action)
        if self.latent_dim and z is None:
            z = h.new_zeros(h.shape[0], self.latent_dim)
        return self.predictor.decoder(torch.cat([h, z], dim=-1) if self.latent_dim else h)

    def energy(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """D(prediction, target) per row (N,): the objective's energy."""
        return self.objective.energy.aligned(prediction, target)

    def infer_latent(self, window: torch.Tensor, target: torch.Tensor, action: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, sample: bool = False) -> torch.Tensor:  # fmt: skip
        """z (N, latent_dim) of q(z | h, s'_{t+1}): its mean, or a sample with ``sample``."""
        h = self.context(window, action)
        if not self.latent_dim:
            return h.new_zeros(h.shape[0], 0)
        stats = self.predictor.inference(torch.cat([h, target], dim=-1))
        regulariser = self.predictor.regulariser
        return regulariser.sample(stats, generator) if sample else regulariser.infer(stats)

    def sample_latent(self, n: int, generator: torch.Generator | None = None, like: torch.Tensor | None = None) -> torch.Tensor:
        """(n, latent_dim) draws from the regulariser's prior (N(0, I) for gaussian_kl; see ``prior_sample``)."""
        like = like if like is not None else next(self.parameters())
        return self.predictor.regulariser.prior_sample((n, self.latent_dim), like, generator)

    def transition_energy(self, window: torch.Tensor, target: torch.Tensor, action: torch.Tensor | None = None,
                          refine_steps: int = 0, refine_lr: float = 0.05) -> torch.Tensor:  # fmt: skip
        """E (N,) of the transition (context window, action) -> target: D(pred(h, z*), s') + beta R with z* the
        amortised mean, or min over z by ``refine_steps`` Adam steps (LatentVariablePredictor.energy). No gradient
        to the parameters."""
        with torch.no_grad():
            h = self.context(window, action)
        return self.predictor.energy(h, target, self.objective.energy, refine_steps, refine_lr)

    # -- training ----------------------------------------------------------------------------------
    def forward(self, views: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> LearnerOutput:
        clips = views[0]
        if clips.dim() != 5:
            raise ValueError(f"the world model reads clips (B, T, C, H, W) (data.views: clip_views), got {tuple(clips.shape)}")
        frames, c = clips.shape[1], self.context_frames
        if frames <= c:
            raise ValueError(f"clips of {frames} frames leave no transition after {c} context frames: raise data.views.frames")
        actions = None
        if self.conditioned_on_actions:
            if len(views) < 2 or views[-1].dim() != 2:
                raise ValueError("the action-conditioned world model needs the actions: set `data.views.actions: true`")
            actions = views[-1][:, c - 1 : frames - 1]  # a_t of every transition t -> t + 1
        features, s = self._embed(self.online, clips)  # (B, T, F), (B, T, D)
        if s.shape[-1] != self.context_net.mix.out_features:  # shapes are known on the host: no sync
            raise ValueError(f"frames of {tuple(clips.shape[-2:])} px give embeddings of {s.shape[-1]} dimensions; the model was "
                             f"built for {self.context_net.mix.out_features}: with `embedding: tokens`, data.views.image_size "
                             f"must equal model.image_size (or the ViT's backbone.image_size)")
        if self.target.independent:
            targets = self.target_embeddings(clips[:, c:])
        else:
            targets = self.target.finish([s[:, c:]])[0]
        # fresh tensors (not views) cross the graph break at the latent's noise draw: AOTAutograd regenerates an
        # aliased output at run time and got the view's shape wrong (torch 2.14), as LearnerOutput notes
        targets = targets.flatten(0, 1).clone()  # (B (T - c), D): every transition of every clip
        h = self.context_net(windows(s, c).flatten(0, 1), None if actions is None else actions.flatten())
        pooled = features.mean(dim=1)  # the clip's features, for the online probe
        out = self.predictor(h, targets.detach(), generator)
        latent_term = self.predictor.beta * full_precision(out.penalty).mean()
        return self.score([out.prediction, targets], None, pooled, extra_terms={"latent": latent_term})


@register_architecture("world_model")
def build_world_model(
    *,
    objective: nn.Module,
    num_global: int,
    in_channels: int,
    location: str = "model",
    backbone: Mapping[str, Any] | None = None,
    projector: Any = None,
    context_frames: int = 2,
    actions: Mapping[str, Any] | None = None,
    latent: Mapping[str, Any] | None = None,
    target_encoder: Any = "shared",
    embedding: str = "pooled",
    image_size: int | None = None,
) -> WorldModel:
    """Latent-variable predictive world model on clips: next-frame embedding from the past, the action and z."""
    from ebmssl.models import build_backbone, build_heads

    del num_global  # one clip view
    where = location
    if backbone is None:
        raise ConfigError(f"{where}: no `backbone:`. Add e.g. `backbone: {{name: vit, variant: vit_tiny, patch_size: 8}}`.")
    if not isinstance(context_frames, int) or isinstance(context_frames, bool) or not 1 <= context_frames <= 16:
        raise ConfigError(f"{where}.context_frames: expected an integer in [1, 16] (embeddings the prediction reads), got {context_frames!r}.")
    if embedding not in ("pooled", "tokens"):
        raise ConfigError(f"{where}.embedding: expected `pooled` (one vector per frame) or `tokens` (the projected patch-token "
                          f"map of a ViT), got {embedding!r}.")
    encoder = build_backbone({"in_channels": in_channels, **dict(backbone)}, where=f"{where}.backbone")
    heads = build_heads(projector, encoder.output_dim, where=f"{where}.projector")
    dim = heads.output_dim
    if embedding == "tokens":
        if not hasattr(encoder, "tokens") or not hasattr(encoder, "grid"):
            raise ConfigError(f"{where}.embedding: `tokens` needs a token encoder (`conv_map` or a ViT), "
                              f"got {type(encoder).__name__}; or set `embedding: pooled`.")
        size = int(backbone.get("image_size", 0) or 0) or int(image_size or 0)
        if size < 1:
            raise ConfigError(f"{where}.image_size: `embedding: tokens` sizes the map from the frames' size; set `model.image_size` "
                              f"(the views' image_size) or the ViT's `backbone.image_size`.")
        rows, columns = encoder.grid(size, size)
        dim = rows * columns * heads.output_dim
    action_spec = sub_mapping({"actions": actions}, "actions", where)
    check_section(action_spec, ("num_actions", "dim"), where, "actions")
    num_actions, action_dim = action_spec.get("num_actions", 0), action_spec.get("dim", 8)
    for key, value, low in (("num_actions", num_actions, 0), ("dim", action_dim, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 4096:
            raise ConfigError(f"{where}.actions.{key}: expected an integer in [{low}, 4096], got {value!r}.")
    context = Context(dim, context_frames, num_actions, action_dim)
    predictor = build_latent_predictor(sub_mapping({"latent": latent}, "latent", where), dim, where)
    target = build_target_encoder(target_encoder, f"{where}.target_encoder", schedule="cosine")
    return WorldModel(encoder, heads, context, predictor, objective, target, tokens=embedding == "tokens")
