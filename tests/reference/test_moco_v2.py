"""MoCo v2 exactness: configs/methods/moco_v2.yaml against an independent float64 re-implementation of
github.com/facebookresearch/moco moco/builder.py (MoCo.forward: q, k normalised, l_pos = q.k,
l_neg = q @ queue with the queue stored (dim, K), logits [l_pos, l_neg] / T, CrossEntropy with label 0;
then _dequeue_and_enqueue(k): queue[:, ptr:ptr + B] = k^T, ptr = (ptr + B) % K).
The queue contents are set by the test (same keys, our layout (K, dim) is the transpose)."""

from __future__ import annotations

import pytest
import torch

import ebmssl
from ebmssl.config import apply_overrides, load_config
from tests.reference._compare import method_objective_in_model, method_target, method_targets

TOL = dict(rtol=1e-6, atol=1e-6)


def official_moco_logits(q: torch.Tensor, k: torch.Tensor, queue_dk: torch.Tensor, temperature: float) -> torch.Tensor:
    q = q / q.norm(dim=1, keepdim=True)
    k = k / k.norm(dim=1, keepdim=True)
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ queue_dk.clone().detach()
    return torch.cat([l_pos, l_neg], dim=1) / temperature


def official_moco_loss(q, k, queue_dk, temperature):
    logits = official_moco_logits(q, k, queue_dk, temperature)
    return torch.nn.functional.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long))


def official_enqueue(queue_dk: torch.Tensor, pointer: int, keys: torch.Tensor) -> tuple[torch.Tensor, int]:
    keys = keys / keys.norm(dim=1, keepdim=True)
    size = queue_dk.shape[1]
    assert size % keys.shape[0] == 0  # the official assertion
    queue_dk = queue_dk.clone()
    queue_dk[:, pointer : pointer + keys.shape[0]] = keys.T
    return queue_dk, (pointer + keys.shape[0]) % size


def build(size: int, dim: int) -> ebmssl.Objective:
    config = apply_overrides(
        load_config("moco_v2", "methods"), [f"objective.strategies.0.size={size}", f"objective.strategies.0.dim={dim}"]
    )
    return ebmssl.build_objective(config).double()


def queue_module(objective: ebmssl.Objective):
    return objective.strategies[0].queue


@pytest.mark.parametrize("n, d, size", [(2, 3, 8), (8, 16, 64), (16, 8, 256), (5, 32, 40)])
def test_moco_v2_matches_official_loss_and_enqueue(n: int, d: int, size: int) -> None:
    generator = torch.Generator().manual_seed(n + d + size)
    objective = build(size, d)
    queue_dk = torch.nn.functional.normalize(torch.randn(d, size, generator=generator, dtype=torch.float64), dim=0)
    pointer = 0 if size % n else (n * 3) % size
    queue_module(objective).queue.copy_(queue_dk.T)
    queue_module(objective).pointer.fill_(pointer)

    q0, q1 = (torch.randn(n, d, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(2))
    k0, k1 = (torch.randn(n, d, generator=generator, dtype=torch.float64) for _ in range(2))
    out = objective([q0, q1], [k0, k1])  # training mode: enqueues k1 after the loss
    ours = torch.autograd.grad(out.loss, [q0, q1], allow_unused=True)
    reference = official_moco_loss(q0, k1, queue_dk, 0.2)
    theirs = torch.autograd.grad(reference, [q0])
    torch.testing.assert_close(out.loss, reference, **TOL)
    torch.testing.assert_close(ours[0], theirs[0], **TOL)
    assert ours[1] is None or bool((ours[1] == 0).all())  # pairs [[0, 1]]: view 1's query is unused

    expected_queue, expected_pointer = official_enqueue(queue_dk, pointer, k1)
    torch.testing.assert_close(queue_module(objective).queue, expected_queue.T, rtol=0, atol=1e-12)
    assert int(queue_module(objective).pointer) == expected_pointer


def test_moco_v2_wraps_when_the_batch_does_not_divide_the_queue() -> None:
    objective = build(10, 4)
    queue = queue_module(objective)
    start = queue.queue.clone()
    keys = [torch.randn(4, 4, dtype=torch.float64) for _ in range(3)]
    q = [torch.randn(4, 4, dtype=torch.float64) for _ in range(2)]
    written = []
    for key in keys:
        objective(q, [key, key])
        written.append(torch.nn.functional.normalize(key, dim=1))
    # 12 keys into 10 slots: slots 0, 1 hold keys 10, 11; slots 2..9 keys 2..9
    flat = torch.cat(written)
    torch.testing.assert_close(queue.queue[:2], flat[10:12])
    torch.testing.assert_close(queue.queue[2:], flat[2:10])
    assert int(queue.pointer) == 2
    assert not torch.equal(queue.queue, start)


def test_moco_v2_eval_mode_does_not_enqueue() -> None:
    objective = build(16, 4).eval()
    before = queue_module(objective).queue.clone()
    objective([torch.randn(4, 4, dtype=torch.float64)] * 2, [torch.randn(4, 4, dtype=torch.float64)] * 2)
    assert torch.equal(before, queue_module(objective).queue) and int(queue_module(objective).pointer) == 0


def test_moco_v2_queue_state_dict_round_trip() -> None:
    objective = build(12, 4)
    objective([torch.randn(5, 4, dtype=torch.float64)] * 2, [torch.randn(5, 4, dtype=torch.float64)] * 2)
    state = objective.state_dict()
    assert any(key.endswith("queue.queue") for key in state) and any(key.endswith("queue.pointer") for key in state)
    fresh = build(12, 4)
    fresh.load_state_dict(state)
    assert torch.equal(queue_module(fresh).queue, queue_module(objective).queue)
    assert int(queue_module(fresh).pointer) == 5
    q, k = [torch.randn(3, 4, dtype=torch.float64)] * 2, [torch.randn(3, 4, dtype=torch.float64)] * 2
    fresh.eval(), objective.eval()
    torch.testing.assert_close(fresh(q, k).loss, objective(q, k).loss, rtol=0, atol=0)


def test_moco_v2_config_defaults() -> None:
    objective = method_objective_in_model("moco_v2")  # the queue's width is the projector's output_dim
    queue = queue_module(objective)
    assert queue.queue.shape == (65536, 128)
    torch.testing.assert_close(queue.queue.norm(dim=1), torch.ones(65536))
    assert objective.energy.temperature == 0.2
    assert method_target("moco_v2").momentum_at(ebmssl.Progress(step=7, total_steps=10)) == pytest.approx(0.999)
