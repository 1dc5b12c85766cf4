"""The truncate head (DirectCLR): first `dim` coordinates, no parameters, gradient only into those."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.models import build_heads
from ebmssl.registry import ConfigError


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(1, 16), st.integers(1, 32), st.data())
def test_keeps_the_leading_coordinates(n: int, width: int, data) -> None:
    dim = data.draw(st.integers(1, width))
    head = build_heads({"name": "truncate", "dim": dim}, width)
    x = torch.randn(n, width, requires_grad=True)
    y = head(x)
    assert head.output_dim == dim and list(head.parameters()) == []
    torch.testing.assert_close(y, x[:, :dim])
    (grad,) = torch.autograd.grad(y.sum(), [x])
    assert bool((grad[:, :dim] == 1).all()) and bool((grad[:, dim:] == 0).all())


@pytest.mark.parametrize("dim", [0, 9])
def test_rejects_dims_outside_the_input(dim: int) -> None:
    with pytest.raises((ConfigError, ValueError), match="truncate"):
        build_heads({"name": "truncate", "dim": dim}, 8)
