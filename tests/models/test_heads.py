"""Heads: MLP structure, SwAV prototypes normalisation, DINO head, chaining."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ebmssl.models import build_head, build_heads
from ebmssl.registry import ConfigError


def test_mlp_structure():
    head = build_head({"name": "mlp", "hidden_dim": 32, "output_dim": 16, "num_layers": 3}, 8)
    kinds = [type(m).__name__ for m in head.layers]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head.output_dim == 16 and head(torch.randn(5, 8)).shape == (5, 16)
    one = build_head({"name": "mlp", "output_dim": 4, "num_layers": 1}, 8)
    assert [type(m).__name__ for m in one.layers] == ["Linear"]
    plain = build_head({"name": "mlp", "hidden_dim": 6, "output_dim": 4, "batch_norm": False, "last_bias": False}, 8)
    assert [type(m).__name__ for m in plain.layers] == ["Linear", "ReLU", "Linear"] and plain.layers[-1].bias is None
    last = build_head({"name": "mlp", "hidden_dim": 6, "output_dim": 4, "last_batch_norm": True}, 8)
    assert isinstance(last.layers[-1], nn.BatchNorm1d) and not last.layers[-1].affine
    out = last.train()(torch.randn(64, 8))
    torch.testing.assert_close(out.mean(0), torch.zeros(4), atol=1e-5, rtol=0)


def test_prototypes_normalise_rows_in_training_and_score_cosines():
    torch.manual_seed(0)
    head = build_head({"name": "prototypes", "num_prototypes": 7}, 5)
    assert head.output_dim == 7
    assert [name for name, _ in head.named_parameters()] == ["prototypes.weight"]
    with torch.no_grad():
        head.prototypes.weight.mul_(3.0)  # an optimizer step moved them off the sphere
    head.eval()
    x = torch.randn(4, 5)
    head(x)
    assert not torch.allclose(head.prototypes.weight.norm(dim=1), torch.ones(7))  # eval: untouched
    out = head.train()(x)
    torch.testing.assert_close(head.prototypes.weight.norm(dim=1), torch.ones(7))
    torch.testing.assert_close(out, F.normalize(x, dim=1) @ F.normalize(head.prototypes.weight, dim=1).T)
    out.sum().backward()
    assert head.prototypes.weight.grad is not None
    raw = build_head({"name": "prototypes", "num_prototypes": 3, "normalize": False}, 5)
    torch.testing.assert_close(raw(x), x @ raw.prototypes.weight.T)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 6), scale=st.floats(0, 1e4), seed=st.integers(0, 2**16))
def test_prototype_scores_are_bounded_cosines(rows, scale, seed):
    torch.manual_seed(seed)
    head = build_head({"name": "prototypes", "num_prototypes": 4}, 3).train()
    out = head(scale * torch.randn(rows, 3))
    assert torch.isfinite(out).all() and (out.abs() <= 1 + 1e-5).all()


@pytest.mark.parametrize("norm_last_layer", [True, False])
@pytest.mark.parametrize("use_bn, num_layers", [(False, 3), (True, 2), (False, 1)])
def test_dino_head(norm_last_layer, use_bn, num_layers):
    torch.manual_seed(0)
    spec = {"name": "dino_head", "output_dim": 50, "hidden_dim": 16, "bottleneck_dim": 8, "num_layers": num_layers,
            "use_bn": use_bn, "norm_last_layer": norm_last_layer}  # fmt: skip
    head = build_head(spec, 12)
    assert head.output_dim == 50
    magnitude = head.last_layer.parametrizations.weight.original0
    direction = head.last_layer.parametrizations.weight.original1
    assert magnitude.requires_grad is (not norm_last_layer) and torch.all(magnitude == 1)
    assert head.last_layer.bias is None
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(50))
    x = torch.randn(6, 12)
    expected = F.normalize(head.mlp(x), dim=-1) @ F.normalize(direction, dim=1).T
    torch.testing.assert_close(head(x), expected)
    linears = [m for m in head.mlp.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == num_layers and all(torch.all(m.bias == 0) for m in linears)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head.mlp.modules()) == (num_layers - 1 if use_bn else 0)


def test_build_heads_chains_and_identity():
    for empty in (None, []):
        identity = build_heads(empty, 9)
        assert identity.output_dim == 9 and torch.equal(identity(torch.ones(2, 9)), torch.ones(2, 9))
    assert build_head("identity", 5).output_dim == 5
    specs = [{"name": "mlp", "hidden_dim": 16, "output_dim": 8}, {"name": "prototypes", "num_prototypes": 11}]
    chain = build_heads(specs, 4)
    assert chain.output_dim == 11 and chain(torch.randn(3, 4)).shape == (3, 11)
    assert any("prototypes" in name for name, _ in chain.named_parameters())
    single = build_heads([{"name": "mlp", "hidden_dim": 16, "output_dim": 8}], 4)
    assert single.output_dim == 8


def test_head_build_errors():
    with pytest.raises(ConfigError, match="input_dim"):
        build_head({"name": "mlp", "input_dim": 3}, 4)
    with pytest.raises(ConfigError, match="mlp"):
        build_heads({"name": "mpl"}, 4)
    with pytest.raises(ConfigError, match=r"\[1\]"):
        build_heads([{"name": "mlp", "output_dim": 4}, {"name": "prototypes", "num_prototypes": "ten"}], 4)
    with pytest.raises(ConfigError):
        build_heads(3, 4)
