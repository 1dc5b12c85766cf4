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
