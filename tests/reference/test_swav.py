"""SwAV exactness: the `swav` config against facebookresearch/swav (main_swav.py).

Reference (rewritten from ``train`` and ``distributed_sinkhorn`` for one process): for each crop_id in
crops_for_assign = [0, 1], ``q = sinkhorn(exp(out / epsilon))[-bs:]`` (normalise the total to 1, then
``iterations`` times: prototype sums to 1/K, sample sums to 1/B; finally times B), and
``loss += sum_{v != crop_id} -mean_b sum_k q log softmax(out_v / T) / (n_crops - 1)``, then
``loss /= len(crops_for_assign)``. With a queue, the queued rows are prepended before Sinkhorn once the
queue is full; our queue stores past scores (documented deviation), so the reference queue does too.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import ebmssl
from ebmssl import load_config

TOL = 1e-6


def reference_sinkhorn(out: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    with torch.no_grad():
        q = torch.exp(out / epsilon).t()  # K x B
        b = q.shape[1]
        k = q.shape[0]
        q /= torch.sum(q)
        for _ in range(iterations):
            q /= torch.sum(q, dim=1, keepdim=True)
            q /= k
            q /= torch.sum(q, dim=0, keepdim=True)
            q /= b
        q *= b
        return q.t()


def reference_swav_loss(crops, epsilon=0.05, iterations=3, temperature=0.1, crops_for_assign=(0, 1), queue=None):
    bs = crops[0].shape[0]
    output = torch.cat(crops)
    n_crops = len(crops)
    loss = 0
    for i, crop_id in enumerate(crops_for_assign):
        with torch.no_grad():
            out = output[bs * crop_id : bs * (crop_id + 1)].detach()
            if queue is not None:
                out = torch.cat((queue[i], out))
            q = reference_sinkhorn(out, epsilon, iterations)[-bs:]
        subloss = 0
        for v in [v for v in range(n_crops) if v != crop_id]:
            x = output[bs * v : bs * (v + 1)] / temperature
            subloss -= torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
        loss += subloss / (n_crops - 1)
    return loss / len(crops_for_assign)


def swav_objective(num_prototypes: int, **sinkhorn_overrides):
    config = copy.deepcopy(load_config("swav", "methods"))
    spec = config["objective"]["strategies"][0]
    assert spec["name"] == "sinkhorn"
    spec.update(num_prototypes=num_prototypes, **sinkhorn_overrides)
    objective = ebmssl.build_objective(config).double()
    objective.train()
    return objective


def _crops(n_crops: int, n: int, k: int, seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    # prototype scores of l2-normalised embeddings against l2-normalised prototypes lie in [-1, 1]
    return [(scale * torch.tanh(torch.randn(n, k, generator=g, dtype=torch.float64))).requires_grad_() for _ in range(n_crops)]


def _check(n_crops: int, n: int, k: int, seed: int, scale: float = 1.0) -> None:
    crops = _crops(n_crops, n, k, seed, scale)
    objective = swav_objective(k)
    # model.target: online = the global crops' outputs of the same network (targets are detached by sinkhorn)
    out = objective(online=crops, target=crops[:2])
    ours = torch.autograd.grad(out.loss, crops)
    expected = reference_swav_loss(crops)
    theirs = torch.autograd.grad(expected, crops)
    torch.testing.assert_close(out.loss, expected, rtol=TOL, atol=TOL)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("n_crops,n,k", [(2, 8, 16), (8, 16, 30), (4, 5, 3000), (3, 32, 7)])
def test_swav_value_and_gradient(n_crops: int, n: int, k: int) -> None:
    _check(n_crops, n, k, seed=n_crops * 31 + n * 7 + k)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(n_crops=st.integers(2, 6), n=st.integers(2, 16), k=st.integers(2, 40), seed=st.integers(0, 2**16),
       scale=st.sampled_from([0.1, 1.0, 2.0]))
def test_swav_random_shapes(n_crops: int, n: int, k: int, seed: int, scale: float) -> None:
    _check(n_crops, n, k, seed, scale)


@pytest.mark.parametrize("n,k", [(64, 8), (30, 30), (12, 40)])
def test_swav_codes_have_uniform_marginals(n: int, k: int) -> None:
    crops = _crops(2, n, k, seed=n + k)
    objective = swav_objective(k, iterations=100)
    codes = objective(online=crops, target=crops[:2]).batch.target
    for q, scores in zip(codes, crops):
        torch.testing.assert_close(q.sum(dim=1), torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-10)
        torch.testing.assert_close(q.sum(dim=0), torch.full((k,), n / k, dtype=torch.float64), rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(q, reference_sinkhorn(scores.detach(), 0.05, 100), rtol=TOL, atol=TOL)
    # the default 3 iterations: rows exactly normalised, prototype marginals equal the reference's
    objective = swav_objective(k)
    codes = objective(online=crops, target=crops[:2]).batch.target
    torch.testing.assert_close(codes[0].sum(dim=1), torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-10)
    torch.testing.assert_close(codes[0], reference_sinkhorn(crops[0].detach(), 0.05, 3), rtol=TOL, atol=TOL)


def test_swav_with_score_queue() -> None:
    n, k, queue_length, n_crops = 4, 10, 12, 4
    objective = swav_objective(k, queue_length=queue_length)
    reference_queue = torch.zeros(2, queue_length, k, dtype=torch.float64)
    for step in range(6):
        crops = _crops(n_crops, n, k, seed=100 + step)
        out = objective(online=crops, target=crops[:2])
        ours = torch.autograd.grad(out.loss, crops)
        # official: use the queue once its last row is non-zero, then shift in the newest rows first
        use = bool(torch.all(reference_queue[:, -1] != 0))
        expected = reference_swav_loss(crops, queue=reference_queue.clone() if use else None)
        theirs = torch.autograd.grad(expected, crops)
        for i in range(2):
            reference_queue[i, n:] = reference_queue[i, :-n].clone()
            reference_queue[i, :n] = crops[i].detach()
        torch.testing.assert_close(out.loss, expected, rtol=TOL, atol=TOL)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)
        torch.testing.assert_close(objective.strategies[0].queue, reference_queue, rtol=0, atol=0)
        assert objective.strategies[0].queue_ready() == (step >= 2)
