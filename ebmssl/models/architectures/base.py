"""The architecture contract: what every ``model.architecture`` provides to the trainer, evaluation and export.

An architecture wires a method's model around its objective. Each one subclasses :class:`Architecture`,
registers its modules, then calls :meth:`Architecture.attach` with the objective and its target branch
(:mod:`ebmssl.models.target`: no target, the online outputs with or without gradient, or the one EMA copy
with its one momentum schedule). The base then owns what every architecture shares:

* ``forward(views, generator=None) -> LearnerOutput``: the subclass computes its online and target views
  and hands them to :meth:`Architecture.score`, which runs the objective in float32 (autocast off: softmaxes,
  logsumexps and covariance statistics lose too much in bf16/fp16) and packs the output;
* :meth:`encoders`: ``{"online": backbone, "target": target backbone}`` (the target only when the branch
  has weights of its own), read by the final evaluation, the experiments and the export; ``encoder`` is
  the online one;
* ``after_optimizer_step(progress, applied)``: the target branch's update (the EMA step, skipped on the guard's flag), returns values to log;
  ``before_optimizer_step(progress)``: the heads' freeze schedules;
* ``collapse_mechanisms()``: what the architecture does against collapse (for the collapse guard);
* ``embed(views)``: the embeddings the diagnostics compare (rank, spectrum, alignment).

The online linear probe is not part of an architecture: the trainer runs it on ``LearnerOutput.features``
(:mod:`ebmssl.training.online_probe`).

Builders are registered with ``@register_architecture(name)`` and take keyword arguments only: the
``model:`` section's keys (checked against the builder's signature by the registry: an unknown or
mistyped key is a ConfigError naming it) plus :data:`BUILD_CONTEXT` (``objective``, ``num_global``,
``in_channels``, ``location``) given by :func:`ebmssl.models.architectures.build_learner`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ebmssl.energies.tokens import TokenSets
from ebmssl.models.freeze import cancel_frozen_gradients
from ebmssl.models.target import NoTarget, TargetBranch
from ebmssl.objective import ObjectiveOutput
from ebmssl.strategies.base import Progress

# the arguments build_learner hands every builder besides the `model:` keys
BUILD_CONTEXT = ("objective", "num_global", "in_channels", "location")


@dataclass
class LearnerOutput:
    """What one forward returns: the loss to minimise, the objective's output (terms to log) and the
    backbone features of the first view, detached, for the trainer's online probe.

    Nothing in it aliases a tensor of the graph: ``features`` is a fresh copy and ``objective`` leaves out the
    strategies' view batch (``batch`` None: its views are chunks of the forward's intermediates). Under
    ``torch.compile`` an output that views an intermediate of the traced region makes AOTAutograd
    regenerate the alias at run time, which crashed on the first step (torch 2.14).
    """

    loss: torch.Tensor
    objective: ObjectiveOutput
    features: torch.Tensor


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision tensors (the objective runs in float32 under mixed precision); else unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def full_precision_tokens(tokens: TokenSets) -> TokenSets:
    """The token sets with every half-precision tensor made float32 (masks and positions unchanged)."""
    changed = {
        name: [full_precision(t) for t in value]
        for name in ("online", "target", "online_features", "target_features")
        if (value := getattr(tokens, name)) is not None
    }
    return dataclasses.replace(tokens, **changed)


def default_generator(generator: torch.Generator | None, like: torch.Tensor) -> torch.Generator:
    """The batch's generator for model-side randomness (masks, noise), or a fixed seed-0 generator on ``like``'s device."""
    return generator if generator is not None else torch.Generator(device=like.device).manual_seed(0)


class Architecture(nn.Module):
    """Base of every architecture: owns the objective call, the target branch, ``encoders()`` and the hooks.

    Subclasses define ``encoder`` (the online backbone), ``online_branch`` (the module the target branch
    copies and follows), ``forward`` and ``embed``; they may extend ``collapse_mechanisms``.
    """

    objective: nn.Module
    target: TargetBranch
    channels_last: bool = False  # set by the run's build (train.channels_last)
    # True when forward passes the objective token sets (`tokens=`, ebmssl.energies.tokens.TokenSets):
    # build_learner refuses objective.patch_terms with an architecture that does not
    feeds_tokens: bool = False

    def attach(self, objective: nn.Module, target: TargetBranch | None = None) -> None:
        """Register the objective and the target branch (after the subclass's own modules: their order is
        the parameters' order), and let the target copy the online branch."""
        self.objective = objective
        self.target = target if target is not None else NoTarget()
        self.target.attach(self.online_branch, self.encoder)

    # -- what subclasses name ------------------------------------------------------------------------
    @property
    def encoder(self) -> nn.Module:
        """The online backbone: evaluated (kNN, linear probe), exported, and probed online."""
        raise NotImplementedError

    @property
    def online_branch(self) -> nn.Module:
        """The module a momentum target copies and follows (default: the encoder)."""
        return self.encoder

    def embed(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    # -- the contract --------------------------------------------------------------------------------
    def encoders(self) -> dict[str, nn.Module]:
        """``{"online": backbone}`` plus ``"target"`` when the target branch has weights of its own (EMA)."""
        found = {"online": self.encoder}
        target = self.target.encoder()
        if target is not None:
            found["target"] = target
        return found

    def score(
        self,
        online: Sequence[torch.Tensor],
        target: Sequence[torch.Tensor] | None,
        features: torch.Tensor,
        extra_terms: dict[str, torch.Tensor] | None = None,
        tokens: TokenSets | None = None,
    ) -> LearnerOutput:
        """``objective(online, target, tokens=tokens)`` in float32 with autocast off; ``extra_terms`` (already
        weighted) are added to the loss and logged as terms; ``features``: the first view's backbone features;
        ``tokens``: the token sets of the patch terms (architectures with ``feeds_tokens``), made float32 too."""
        with torch.autocast(device_type=features.device.type, enabled=False):
            result = self.objective(
                [full_precision(z) for z in online],
                None if target is None else [full_precision(t) for t in target],
                **({} if tokens is None else {"tokens": full_precision_tokens(tokens)}),
            )
            for name, term in (extra_terms or {}).items():
                term = full_precision(term)
                result.terms[name] = term
                result.loss = result.loss + term
        result = ObjectiveOutput(loss=result.loss, terms=result.terms)  # without the view batch (aliases)
        return LearnerOutput(loss=result.loss, objective=result, features=features.detach().clone())

    def before_optimizer_step(self, progress: Progress) -> None:
        """Called once gradients are synchronised, before the optimiser steps: the heads' freeze schedules."""
        cancel_frozen_gradients(self, progress.epoch)

    @torch.no_grad()
    def after_optimizer_step(self, progress: Progress, applied: torch.Tensor | None = None) -> dict[str, float]:
        """Called after each optimiser step: the target branch updates itself (not when the step guard's device
        flag ``applied`` is false); returns values worth logging."""
        return self.target.after_optimizer_step(self.online_branch, progress, applied)

    def collapse_mechanisms(self) -> list[tuple[str, str]]:
        """What the architecture does against collapse, as (family, reason): a momentum target by default."""
        return [("asymmetry", self.target.describe())] if self.target.independent else []
