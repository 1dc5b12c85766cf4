"""ViT keep-token masking: the kept tokens are the full run's tokens' inputs, positions travel with them."""

from __future__ import annotations

import pytest
import torch

from ebmssl.models.backbones.vit import vit


def _vit(pool: str = "cls", layers: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    return vit("vit_tiny", image_size=16, patch_size=4, in_channels=1, num_layers=layers, hidden_dim=24, num_heads=2, mlp_dim=48, pool=pool).eval()


def test_keep_all_equals_no_mask_and_forward_is_unchanged() -> None:
    model = _vit()
    x = torch.randn(3, 1, 16, 16)
    cls, tokens = model.tokens(x)
    keep = torch.arange(16).expand(3, -1)
    cls_k, tokens_k = model.tokens(x, keep)
    torch.testing.assert_close(cls, cls_k)
    torch.testing.assert_close(tokens, tokens_k)
    torch.testing.assert_close(model(x), cls)
    assert tokens.shape == (3, 16, 24)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_permuting_kept_indices_permutes_tokens(pool: str) -> None:
    """Positions are gathered per token: the order of ``keep`` only reorders the outputs (no position leak)."""
    model = _vit(pool, layers=2)
    x = torch.randn(2, 1, 16, 16)
    keep = torch.tensor([[0, 5, 9, 15], [3, 4, 7, 12]])
    perm = torch.tensor([2, 0, 3, 1])
    _, a = model.tokens(x, keep)
    _, b = model.tokens(x, keep[:, perm])
    torch.testing.assert_close(a[:, perm], b, rtol=1e-5, atol=1e-5)


def test_single_layer_token_depends_on_its_own_position() -> None:
    """Without attention partners (one kept token, no class token) a token's output is its own patch + position."""
    model = _vit("mean")
    x = torch.randn(1, 1, 16, 16)
    x[..., 0:4, 0:4] = x[..., 4:8, 4:8]  # patches 0 and 5 hold the same pixels
    _, first = model.tokens(x, torch.tensor([[0]]))
    _, second = model.tokens(x, torch.tensor([[5]]))
    assert not torch.allclose(first, second)


def test_mean_pool_has_no_class_token_and_features_are_mean_tokens() -> None:
    model = _vit("mean")
    assert model.class_token is None
    assert all("class_token" not in name for name, _ in model.named_parameters())
    x = torch.randn(2, 1, 16, 16)
    cls, tokens = model.tokens(x)
    assert cls is None
    torch.testing.assert_close(model(x), tokens.mean(1))


def test_bad_keep_and_pool_are_explained() -> None:
    model = _vit()
    with pytest.raises(ValueError, match="keep must be"):
        model.tokens(torch.randn(2, 1, 16, 16), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="pool must be"):
        vit("vit_tiny", image_size=16, patch_size=4, pool="max")
