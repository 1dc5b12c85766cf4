"""VICRegL exactness: configs/methods/vicregl.yaml against facebookresearch/VICRegL main_vicregl.py
(``global_loss``, ``local_loss``, ``_local_loss``, ``neirest_neighbores`` with its sort-of-sort selection,
``batched_index_select``, ``vicreg_loss``; alpha 0.75, --l2-all-matches, --num-matches 20 4, not fast_vc_reg),
written out below, float64, value and gradients. lightly 1.6's VICRegLLoss orders the matched tokens by distance
instead of token order (its docstring says so), which changes the local variance/covariance; the YAML header
records that convention and this test compares with the official code.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ebmssl
from ebmssl.energies.tokens import TokenSets
from tests.reference._compare import assert_matches_reference

DT = torch.float64
INV, VAR, COV = 25.0, 25.0, 1.0


def batched_index_select(input, dim, index):
    views = [input.shape[0]] + [1 if i != dim else -1 for i in range(1, len(input.shape))]
    expanse = list(input.shape)
    expanse[0] = -1
    expanse[dim] = -1
    return torch.gather(input, dim, index.view(views).expand(expanse))


def neirest_neighbores(input_maps, candidate_maps, distances, num_matches):
    batch_size = input_maps.size(0)
    if num_matches is None or num_matches == -1:
        num_matches = input_maps.size(1)
    topk_values, topk_indices = distances.topk(k=1, largest=False)
    topk_values, topk_indices = topk_values.squeeze(-1), topk_indices.squeeze(-1)
    _, sorted_values_indices = torch.sort(topk_values, dim=1)
    _, sorted_indices_indices = torch.sort(sorted_values_indices, dim=1)
    mask = torch.stack([torch.where(sorted_indices_indices[i] < num_matches, True, False) for i in range(batch_size)])
    topk_indices_selected = topk_indices.masked_select(mask).reshape(batch_size, num_matches)
    indices = torch.arange(0, topk_values.size(1)).unsqueeze(0).repeat(batch_size, 1)
    indices_selected = indices.masked_select(mask).reshape(batch_size, num_matches)
    return batched_index_select(input_maps, 1, indices_selected), batched_index_select(candidate_maps, 1, topk_indices_selected)


def vicreg_loss(x, y):
    repr_loss = INV * F.mse_loss(x, y)
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    std_x, std_y = torch.sqrt(x.var(dim=0) + 0.0001), torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = VAR * (torch.mean(F.relu(1.0 - std_x)) / 2 + torch.mean(F.relu(1.0 - std_y)) / 2)
    x, y = x.permute((1, 0, 2)), y.permute((1, 0, 2))
    *_, sample_size, num_channels = x.shape
    non_diag_mask = ~torch.eye(num_channels, dtype=torch.bool)
    cov_x = torch.einsum("...nc,...nd->...cd", x, x) / (sample_size - 1)
    cov_loss = cov_x[..., non_diag_mask].pow(2).sum(-1) / num_channels / 2
    cov_y = torch.einsum("...nc,...nd->...cd", y, y) / (sample_size - 1)
    cov_loss = cov_loss + cov_y[..., non_diag_mask].pow(2).sum(-1) / num_channels / 2
    return repr_loss, std_loss, COV * cov_loss.mean()


def _local_loss(maps_1, maps_2, location_1, location_2, num_matches=(20, 4)):
    inv = var = cov = 0.0
    for matcher in ("l2", "location"):
        if matcher == "l2":
            d12, d21, counts = torch.cdist(maps_1, maps_2), torch.cdist(maps_2, maps_1), (None, None)
        else:
            l1, l2 = location_1.flatten(1, 2), location_2.flatten(1, 2)
            d12, d21, counts = torch.cdist(l1, l2), torch.cdist(l2, l1), num_matches
        f1, n1 = neirest_neighbores(maps_1, maps_2, d12, counts[0])
        f2, n2 = neirest_neighbores(maps_2, maps_1, d21, counts[1])
        i1, v1, c1 = vicreg_loss(f1, n1)
        i2, v2, c2 = vicreg_loss(f2, n2)
        inv, var, cov = inv + (i1 / 2 + i2 / 2), var + (v1 / 2 + v2 / 2), cov + (c1 / 2 + c2 / 2)
    return inv, var, cov


def official_vicregl(embedding, maps, locations, alpha=0.75, num_matches=(20, 4)):
    num_views = len(embedding)
    inv = 0.0
    iters = 0
    for i in range(2):
        for j in [v for v in range(num_views) if v != i]:
            inv = inv + F.mse_loss(embedding[i], embedding[j])
            iters += 1
    inv = INV * inv / iters
    var = cov = 0.0
    for x in embedding:
        x = x - x.mean(dim=0)
        var = var + torch.mean(F.relu(1.0 - torch.sqrt(x.var(dim=0) + 0.0001)))
        c = (x.T @ x) / (x.size(0) - 1)
        cov = cov + (c - torch.diag(torch.diag(c))).pow(2).sum() / x.shape[1]
    global_loss = inv + VAR * var / len(embedding) + COV * cov / len(embedding)
    local_inv = local_var = local_cov = 0.0
    iters = 0
    for i in range(2):
        for j in [v for v in range(len(maps)) if v != i]:
            a, b, c = _local_loss(maps[i], maps[j], locations[i], locations[j], num_matches)
            local_inv, local_var, local_cov, iters = local_inv + a, local_var + b, local_cov + c, iters + 1
    local_loss = (local_inv + local_var + local_cov) / iters
    return alpha * global_loss + (1 - alpha) * local_loss


def _grid(n, h, g):
    """(N, h, h, 2) token centres of random crops in image coordinates (VICRegL's grids)."""
    offset = torch.rand(n, 1, 1, 2, generator=g, dtype=DT)
    scale = 0.3 + torch.rand(n, 1, 1, 1, generator=g, dtype=DT)
    axis = (torch.arange(h, dtype=DT) + 0.5) / h
    base = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1)
    return offset + scale * base


@pytest.mark.parametrize("n,h,d,views,matches", [(6, 5, 8, 2, (20, 4)), (8, 6, 6, 3, (20, 4)), (5, 4, 4, 2, (7, 3))])
def test_vicregl_objective_matches_official(n, h, d, views, matches) -> None:
    g = torch.Generator().manual_seed(n + h + d + views)
    config = ebmssl.load_config("vicregl", "methods")
    config["objective"]["patch_terms"][0]["num_matches"] = list(matches)
    objective = ebmssl.build_objective(config).double()
    base = torch.randn(n, d, generator=g, dtype=DT)
    embedding = [(base + 0.5 * torch.randn(n, d, generator=g, dtype=DT)).requires_grad_() for _ in range(2)]
    maps = [torch.randn(n, h * h, d, generator=g, dtype=DT).requires_grad_() for _ in range(views)]
    grids = [_grid(n, h, g) for _ in range(views)]
    tokens = TokenSets(maps, [], online_positions=[grid.flatten(1, 2) for grid in grids])
    out = objective(embedding, tokens=tokens)
    expected = official_vicregl(embedding, maps, grids, num_matches=matches)
    assert_matches_reference(out.loss, expected, inputs=embedding + maps)


def test_vicregl_image_level_terms_match_lightly_global_loss() -> None:
    """lightly 1.6's VICRegLLoss global part (its local part orders matches by distance: see the module docstring)
    times alpha equals the objective's image-level terms (energy + variance + covariance)."""
    from lightly.loss import VICRegLLoss

    g = torch.Generator().manual_seed(7)
    embedding = [torch.randn(10, 6, generator=g, dtype=DT).requires_grad_() for _ in range(2)]
    maps = [torch.randn(10, 16, 6, generator=g, dtype=DT) for _ in range(2)]
    grids = [_grid(10, 4, g) for _ in range(2)]
    out = ebmssl.build_objective("vicregl").double()(
        embedding, tokens=TokenSets(maps, [], online_positions=[grid.flatten(1, 2) for grid in grids])
    )
    image_level = out.terms["energy"] + out.terms["vicreg_variance"] + out.terms["vicreg_covariance"]
    lightly_loss = VICRegLLoss(alpha=0.75)
    features = [(e, m.reshape(10, 4, 4, 6)) for e, m in zip(embedding, maps)]
    expected = 0.75 * lightly_loss._global_loss(global_view_features=features).squeeze()
    assert_matches_reference(image_level, expected, inputs=embedding)
