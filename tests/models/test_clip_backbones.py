"""Clip encoders (the clip contract of CONTRIBUTING.md): the tubelet ViT (vit_tubelet) and the frame-wise encoder
(frame_clip) map clips (N, T, C, H, W) to (N, output_dim), give per-frame features, and refuse bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ebmssl.models import build_backbone
from ebmssl.models.backbones.tubelet_vit import sincos_3d
from ebmssl.models.build import check_backbone_input
from ebmssl.registry import ConfigError

TINY = {"name": "vit_tubelet", "num_frames": 4, "image_size": 8, "patch_size": 4, "tubelet_size": 2, "in_channels": 1,
        "num_layers": 1, "hidden_dim": 24, "num_heads": 2, "mlp_dim": 32}  # fmt: skip
FRAME = {"name": "small_cnn", "width": 4}


@pytest.fixture(scope="module")
def tubelet_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(TINY).eval()


def clips(n: int = 3, frames: int = 4, channels: int = 1, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, frames, channels, size, size, generator=torch.Generator().manual_seed(seed))


def official_3d_sincos(dim: int, grid_size: int, grid_depth: int) -> np.ndarray:
    """facebookresearch/jepa ``src/models/utils/pos_embs.py: get_3d_sincos_pos_embed(uniform_power=True)``."""

    def one_axis(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=float) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid_h, grid_d, grid_w = np.meshgrid(np.arange(grid_size, dtype=float), np.arange(grid_depth, dtype=float),
                                         np.arange(grid_size, dtype=float))  # fmt: skip
    per_axis = int(np.ceil(dim / 6) * 2)
    table = np.concatenate([one_axis(per_axis, grid_d), one_axis(per_axis, grid_h), one_axis(per_axis, grid_w)], axis=1)
    return table[:, :dim]


@pytest.mark.parametrize("dim, size, depth", [(24, 4, 2), (192, 8, 4), (100, 3, 5)])
def test_positions_are_the_official_3d_sine_cosine_table(dim: int, size: int, depth: int) -> None:
    ours = sincos_3d(dim, depth, size, size).double()
    torch.testing.assert_close(ours, torch.from_numpy(official_3d_sincos(dim, size, depth)), rtol=0, atol=1e-6)


def test_tubelet_vit_follows_the_clip_contract(tubelet_vit: torch.nn.Module) -> None:
    x = clips()
    assert tubelet_vit.clip_grid(4, 8, 8) == (2, 2, 2) and tubelet_vit.output_dim == 24
    cls, tokens = tubelet_vit.tokens(x)
    assert cls is None and tokens.shape == (3, 8, 24)
    torch.testing.assert_close(tubelet_vit(x), tokens.mean(dim=1))
    torch.testing.assert_close(tubelet_vit.frame_features(x), tokens.view(3, 2, 4, 24).mean(dim=2))
    every = torch.arange(8).expand(3, -1)
    torch.testing.assert_close(tubelet_vit.tokens(x, every)[1], tokens)
    kept = tubelet_vit.tokens(x, torch.tensor([[0, 5], [1, 2], [7, 3]]))[1]
    assert kept.shape == (3, 2, 24)


def test_tokens_are_time_major_tubelets(tubelet_vit: torch.nn.Module) -> None:
    """A change to the last two frames' top-right 4 x 4 corner reaches token (depth 1, row 0, column 1) = 5 alone
    before the blocks (the patch embedding plus positions)."""
    x = clips(n=1)
    y = x.clone()
    y[:, 2:, :, :4, 4:] += 1.0
    embed = lambda c: tubelet_vit.patch_embed(c.transpose(1, 2)).flatten(2).transpose(1, 2)
    changed = (embed(x) - embed(y)).abs().sum(-1)[0] > 0
    assert changed.nonzero().flatten().tolist() == [5]


def test_other_clip_lengths_and_learned_positions() -> None:
    torch.manual_seed(0)
    learned = build_backbone({**TINY, "positions": "learned"})
    assert learned(clips(frames=6)).shape == (3, 24)  # a 3-step grid: positions resized trilinearly
    sincos = build_backbone(TINY)
    assert sincos(clips(frames=6, size=12)).shape == (3, 24)


def test_frame_clip_is_the_frame_backbone_on_every_frame_then_mean() -> None:
    torch.manual_seed(0)
    encoder = build_backbone({"name": "frame_clip", "frame": FRAME, "in_channels": 1}).eval()
    x = clips(n=2, frames=3)
    per_frame = torch.stack([encoder.frame(x[:, t]) for t in range(3)], dim=1)
    torch.testing.assert_close(encoder.frame_features(x), per_frame)
    torch.testing.assert_close(encoder(x), per_frame.mean(dim=1))
    assert encoder.output_dim == 8 and encoder(x[:, [2, 0, 1]]).allclose(encoder(x), atol=1e-6)  # the mean ignores order


def test_attention_pooling_sees_the_frame_order() -> None:
    torch.manual_seed(0)
    encoder = build_backbone({"name": "frame_clip", "frame": FRAME, "pool": "attention", "num_heads": 2, "in_channels": 1}).eval()
    x = clips(n=2, frames=3)
    out = encoder(x)
    assert out.shape == (2, 8) and torch.isfinite(out).all()
    assert not torch.allclose(encoder(x[:, [2, 0, 1]]), out, atol=1e-5)
    out.sum().backward()
    assert encoder.query.grad is not None and encoder.frame.net[0].weight.grad is not None


@pytest.mark.parametrize("spec, message", [
    ({**TINY, "num_frames": 5}, "divisible by tubelet_size"),
    ({**TINY, "hidden_dim": 25}, "not divisible by num_heads"),
    ({**TINY, "positions": "rotary"}, "positions"),
    ({"name": "frame_clip", "frame": {"name": "frame_clip", "frame": FRAME}}, "image backbone"),
    ({"name": "frame_clip", "frame": {"name": "small_cnn", "width": 3}, "pool": "attention", "num_heads": 4}, "divisible by num_heads=4"),
    ({"name": "frame_clip", "frame": {"name": "no_such_net"}}, "no_such_net"),
])  # fmt: skip
def test_bad_specs_are_config_errors(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_backbone(spec)


def test_clip_encoders_refuse_images_and_pass_the_build_check_on_blank_clips(tubelet_vit: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match=r"expected clips \(N, T, 1, H, W\)"):
        tubelet_vit(torch.zeros(2, 1, 8, 8))
    check_backbone_input(tubelet_vit, 1, [8])
    with pytest.raises(ConfigError, match="cannot encode the 1x3x3 views"):  # smaller than a patch
        check_backbone_input(tubelet_vit, 1, [3])
    check_backbone_input(build_backbone({"name": "frame_clip", "frame": FRAME, "in_channels": 1}), 1, [8])
