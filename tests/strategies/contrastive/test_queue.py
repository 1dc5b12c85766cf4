"""The embedding ring buffer shared by moco_queue and nnclr."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.strategies.contrastive.queue import EmbeddingQueue, random_unit_rows, ring_indices


@settings(max_examples=50, deadline=None)
@given(size=st.integers(1, 20), pointer=st.integers(0, 19), counts=st.lists(st.integers(1, 30), min_size=1, max_size=4))
def test_enqueue_matches_a_python_ring(size: int, pointer: int, counts: list[int]) -> None:
    pointer %= size
    queue = EmbeddingQueue(size, 2, normalize=False)
    queue.pointer.fill_(pointer)
    model = [tuple(row.tolist()) for row in queue.queue]
    position = pointer
    value = 0.0
    for count in counts:
        keys = torch.stack([torch.tensor([value + k, -(value + k)]) for k in range(count)])
        value += count
        queue.enqueue(keys)
        for row in keys:
            model[position] = tuple(row.tolist())
            position = (position + 1) % size
        assert int(queue.pointer) == position
    assert [tuple(row.tolist()) for row in queue.queue] == model


def test_ring_indices_keep_only_the_last_rows_when_the_batch_exceeds_the_queue() -> None:
    slots, pointer = ring_indices(3, 7, 4)
    assert slots.tolist() == [2, 3, 0, 1] and pointer == 2


def test_random_rows_are_unit_and_keys_are_normalised() -> None:
    torch.testing.assert_close(random_unit_rows(50, 7).norm(dim=1), torch.ones(50))
    queue = EmbeddingQueue(4, 3, normalize=True)
    queue.enqueue(torch.tensor([[3.0, 0.0, 4.0]]))
    torch.testing.assert_close(queue.queue[0], torch.tensor([0.6, 0.0, 0.8]))


def test_snapshot_is_a_detached_copy_and_dim_is_checked() -> None:
    queue = EmbeddingQueue(4, 3)
    snap = queue.snapshot(torch.zeros(1, 3, dtype=torch.float64))
    assert snap.dtype == torch.float64 and not snap.requires_grad
    queue.enqueue(torch.ones(4, 3))
    assert not torch.equal(snap.float(), queue.queue)
    with pytest.raises(ValueError, match="dim"):
        queue.check(torch.zeros(2, 5), "test")
