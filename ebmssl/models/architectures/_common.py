"""Pieces shared by the predictive architectures: config checks, fixed 2-D sine-cosine positions and a pre-norm transformer stack."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ebmssl.registry import ConfigError
from ebmssl.schema import check_keys


def split_where(where: str) -> tuple[str, str]:
    """``"file.yaml: model"`` -> (``"file.yaml"``, ``"model."``) for :func:`ebmssl.schema.check_keys`."""
    source, _, section = where.rpartition(": ")
    return (source or where), (section or "model") + "."


def check_section(section: Mapping[str, Any], accepted: Iterable[str], where: str, name: str | None = None) -> None:
    """Unknown-key check of the ``model:`` section (or of its sub-mapping ``name``)."""
    source, prefix = split_where(where)
    check_keys(section, tuple(accepted), prefix + (f"{name}." if name else ""), source)


def sub_mapping(config: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = config.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}.{key} must be a mapping, got {value!r}.")
    return dict(value)


# -- positions and transformer blocks ---------------------------------------------------------------
def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """MAE / I-JEPA ``get_1d_sincos_pos_embed_from_grid``: [sin(p w_k), cos(p w_k)], w_k = 10000^(-2k/dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.double().reshape(-1, 1) * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """(grid_h * grid_w, dim) fixed 2-D sine-cosine positions, row-major (half the channels per axis;
    MAE's ``get_2d_sincos_pos_embed``: the first half encodes the column, the second the row)."""
    if dim % 4:
        raise ValueError(f"sine-cosine positions need a width divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, cols.flatten()), sincos_1d(dim // 2, rows.flatten())], dim=1).float()


class TransformerStack(nn.Module):
    """``depth`` pre-norm transformer blocks (GELU MLP of ``mlp_ratio`` x width) and a final LayerNorm."""

    def __init__(self, width: int, depth: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                width, num_heads, int(width * mlp_ratio), dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class MaskTokenTransformer(nn.Module):
    """The trunk of MAE's decoder and I-JEPA's predictor: ``embed`` (encoder width -> ``width``), a
    learned ``mask_token`` (initialised by ``init_mask_token`` with std 0.02: MAE draws it from a normal,
    I-JEPA from a truncated normal), ``transformer`` (:class:`TransformerStack`) and the fixed sine-cosine
    positions of a patch grid, cached per grid. Subclasses add their output layer and ``forward``."""

    def __init__(
        self, embed_dim: int, width: int, depth: int, num_heads: int, mlp_ratio: float, init_mask_token=nn.init.normal_
    ) -> None:
        super().__init__()
        self.width = width
        self.embed = nn.Linear(embed_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        init_mask_token(self.mask_token, std=0.02)
        self.transformer = TransformerStack(width, depth, num_heads, mlp_ratio)
        self._positions: dict[tuple, torch.Tensor] = {}

    def positions(self, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        """(grid_h * grid_w, width) sine-cosine positions on ``like``'s device and dtype."""
        if torch.compiler.is_compiling():  # traced once; a cache filled while tracing is guarded on and recompiles
            return sincos_2d(self.width, *grid).to(device=like.device, dtype=like.dtype)
        key = (grid, like.device, like.dtype)  # made and moved once per run, not copied every step
        if key not in self._positions:
            self._positions[key] = sincos_2d(self.width, *grid).to(device=like.device, dtype=like.dtype)
        return self._positions[key]
