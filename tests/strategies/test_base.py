"""The strategy interface: what ``transform`` sets aside travels on the ViewBatch to ``update``, so one
instance may transform several batches before updating (no state stashed on ``self`` in between)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.registry import STRATEGIES
from ebmssl.strategies.base import Sizes, Strategy, ViewBatch, one_column_per_row

# strategies whose update reads pre-transform tensors, and how to build one
CARRYING = {
    "nnclr": {"name": "nnclr", "size": 32},
    "dino_centering": {"name": "dino_centering", "center_momentum": 0.5},
    "sinkhorn": {"name": "sinkhorn", "queue_length": 6},
}


def _batch(seed: int, n: int = 6, d: int = 5) -> ViewBatch:
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(2)]
    return ViewBatch(online=views, target=views, pairs=[(0, 1), (1, 0)], has_target=True)


def _state(strategy: Strategy) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in strategy.state_dict().items()}


@pytest.mark.parametrize("name", sorted(CARRYING))
@settings(max_examples=5, deadline=None, derandomize=True)
@given(first=st.integers(0, 1000), second=st.integers(1001, 2000))
def test_update_reads_the_batch_it_is_given(name: str, first: int, second: int) -> None:
    """transform(a), transform(b), update(a), update(b) leaves the same state as the alternating order."""
    interleaved = STRATEGIES.build(CARRYING[name]).double()
    interleaved.bind_sizes(Sizes(online_dim=5, target_dim=5, num_global_views=2))
    alternating = STRATEGIES.build(CARRYING[name]).double()
    alternating.load_state_dict(interleaved.state_dict())  # the same (random) initial queue
    a, b = _batch(first), _batch(second)
    out_a, out_b = interleaved.transform(a), interleaved.transform(b)
    interleaved.update(out_a)
    interleaved.update(out_b)
    alternating.update(alternating.transform(a))
    alternating.update(alternating.transform(b))
    expected, actual = _state(alternating), _state(interleaved)
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=f"{name}: {key}")


def test_carry_is_per_strategy_and_survives_later_transforms() -> None:
    first, second = Strategy(), Strategy()
    batch = first.carry(_batch(0), "mine")
    batch = second.carry(batch.replace(online=batch.online[::-1]), "yours")
    assert first.carried(batch) == "mine" and second.carried(batch) == "yours"
    assert Strategy().carried(batch, default=3) == 3


def test_default_bind_sizes_is_a_no_op() -> None:
    assert Strategy().bind_sizes(Sizes(online_dim=4, target_dim=4, num_global_views=2)) is None


@settings(deadline=None, max_examples=30)
@given(rows=st.integers(1, 12), extra=st.integers(0, 12), seed=st.integers(0, 2**16))
def test_one_column_per_row_marks_exactly_the_given_columns(rows: int, extra: int, seed: int) -> None:
    """The comparison-built mask equals the index assignment it replaces (which syncs on CUDA)."""
    num_columns = rows + extra
    columns = torch.randint(num_columns, (rows,), generator=torch.Generator().manual_seed(seed))
    expected = torch.zeros(rows, num_columns, dtype=torch.bool)
    expected[torch.arange(rows), columns] = True
    assert torch.equal(one_column_per_row(columns, num_columns), expected)
