"""NNCLR exactness: configs/methods/nnclr.yaml against the paper's Algorithm 1 (Dwibedi et al. 2021; no
official code), written out in float64 with a fixed support set Q:

    NN(z, Q) = argmin_q |z/|z| - q/|q||_2   (top-1 neighbour; no gradient)
    L(nn, p) = CE(norm(nn) @ norm(p)^T / T, arange(N))
    loss     = L(NN(z1), p2) / 2 + L(NN(z2), p1) / 2;   then update_queue(Q, z1)

Online views are the predictions p1, p2; target views are the projections z1, z2 (``target: online``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ebmssl
from ebmssl.config import apply_overrides, load_config
from tests.reference._compare import method_objective_in_model

TOL = dict(rtol=1e-6, atol=1e-6)


def reference_nn(z: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    distances = torch.cdist(F.normalize(z.detach(), dim=1), F.normalize(support, dim=1))
    return support[distances.argmin(dim=1)]


def reference_l(nn: torch.Tensor, p: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = F.normalize(nn, dim=1) @ F.normalize(p, dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(p.shape[0]))


def reference_nnclr(p1, p2, z1, z2, support, temperature):
    return reference_l(reference_nn(z1, support), p2, temperature) / 2 + reference_l(reference_nn(z2, support), p1, temperature) / 2


def build(size: int, dim: int, temperature: float = 0.1) -> ebmssl.Objective:
    config = apply_overrides(
        load_config("nnclr", "methods"),
        [f"objective.strategies.0.size={size}", f"objective.strategies.0.dim={dim}", f"objective.energy.temperature={temperature}"],
    )
    return ebmssl.build_objective(config).double()


@pytest.mark.parametrize("n, d, size", [(2, 3, 8), (8, 16, 64), (16, 8, 100), (5, 32, 7)])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nnclr_matches_paper_formula_and_enqueues_z1(n: int, d: int, size: int, temperature: float) -> None:
    generator = torch.Generator().manual_seed(n * 7 + d + size)
    objective = build(size, d, temperature)
    support = torch.randn(size, d, generator=generator, dtype=torch.float64) * 3.0  # raw, unnormalised rows
    objective.strategies[0].support.queue.copy_(support)
    objective.strategies[0].support.pointer.fill_(size - 1)
    p1, p2 = (torch.randn(n, d, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(2))
    z1, z2 = (torch.randn(n, d, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(2))

    out = objective([p1, p2], [z1, z2])
    ours = torch.autograd.grad(out.loss, [p1, p2, z1, z2], allow_unused=True)
    reference = reference_nnclr(p1, p2, z1, z2, support, temperature)
    theirs = torch.autograd.grad(reference, [p1, p2])
    torch.testing.assert_close(out.loss, reference, **TOL)
    torch.testing.assert_close(ours[0], theirs[0], **TOL)
    torch.testing.assert_close(ours[1], theirs[1], **TOL)
    assert all(g is None or bool((g == 0).all()) for g in ours[2:])  # neighbours carry no gradient

    # update_queue(Q, z1): z1 written at the pointer, wrapping around
    expected = support.clone()
    slots = (size - 1 + torch.arange(n)) % size
    kept = min(n, size)
    expected[slots[n - kept :]] = z1.detach()[n - kept :]
    torch.testing.assert_close(objective.strategies[0].support.queue, expected, rtol=0, atol=0)
    assert int(objective.strategies[0].support.pointer) == (size - 1 + n) % size


def test_nnclr_support_state_dict_round_trip() -> None:
    objective = build(16, 4)
    objective([torch.randn(6, 4, dtype=torch.float64)] * 2, [torch.randn(6, 4, dtype=torch.float64)] * 2)
    fresh = build(16, 4)
    fresh.load_state_dict(objective.state_dict())
    assert torch.equal(fresh.strategies[0].support.queue, objective.strategies[0].support.queue)
    assert int(fresh.strategies[0].support.pointer) == 6


def test_nnclr_config_defaults() -> None:
    objective = method_objective_in_model("nnclr")  # the support set's width is the projector's output_dim
    assert objective.strategies[0].support.queue.shape == (98304, 256)
    assert objective.energy.temperature == 0.1 and objective.pair_reduction == "mean"
