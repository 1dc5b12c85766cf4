"""The exactness assertion shared by the reference tests: same loss value and same input gradient."""

from __future__ import annotations

from collections.abc import Sequence

import torch

TOL = 1e-6


def assert_matches_reference(
    loss: torch.Tensor,
    expected: torch.Tensor,
    inputs: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor] = (),
    tol: float = TOL,
) -> None:
    """``loss`` equals the reference ``expected`` in value and in its gradient w.r.t. ``inputs``.

    ``targets`` are stop-gradient / EMA target tensors: the reference treats them as constants, and
    ``loss`` must send them no gradient at all.
    """
    inputs, targets = list(inputs), list(targets)
    ours = torch.autograd.grad(loss, inputs + targets, allow_unused=True)
    theirs = torch.autograd.grad(expected, inputs)
    torch.testing.assert_close(loss, expected, rtol=tol, atol=tol)
    for a, b in zip(ours[: len(inputs)], theirs):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    assert all(g is None for g in ours[len(inputs) :]), "stop-gradient / EMA targets must receive no gradient"


def method_target(method: str):
    """The method's target branch (``model.target`` of ``configs/methods/<method>.yaml``), built."""
    from ebmssl.config import load_config
    from ebmssl.models.target import build_target

    return build_target((load_config(method, "methods").get("model") or {}).get("target"))


def method_targets(method: str, targets: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``targets`` as the method's target branch hands them to the objective.

    A stop-gradient or EMA target branch detaches them (the architecture, not the objective, owns that
    asymmetry); with ``online`` they keep their gradient.
    """
    return method_target(method).finish(list(targets))


def method_objective_in_model(method: str):
    """The method's objective after its architecture was built around it (sizes bound from the heads).

    The backbone is swapped for a tiny CNN; the heads are the config's, so every width is the shipped one.
    """
    import ebmssl
    from ebmssl.config import load_config
    from ebmssl.models.architectures import build_learner

    config = load_config(method, "methods")
    objective = ebmssl.build_objective(config)
    model = {**config["model"], "backbone": {"name": "small_cnn", "width": 8}}
    build_learner(model, objective, num_global=2, in_channels=3)
    return objective
