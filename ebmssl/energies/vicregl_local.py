"""VICRegL's local term: feature maps matched by location and by nearest neighbour in feature space.

Bardes, Ponce, LeCun 2022, "VICRegL: Self-Supervised Learning of Local Visual Features" (NeurIPS); official
code github.com/facebookresearch/VICRegL (main_vicregl.py: ``local_loss``, ``_local_loss``,
``neirest_neighbores``, ``vicreg_loss``).

For every pair (i, j), i among the first ``anchor_views`` views and j any other view, with maps
``x = online[i]`` (N, T_i, D), ``y = online[j]`` and token centres ``p_i, p_j`` (N, T, 2) in image coordinates:

* match: for each token of ``x`` its nearest token of ``y`` (by feature distance ``|x_t - y_s|``, or by
  location ``|p_i,t - p_j,s|``); keep the k tokens of ``x`` with the smallest such distance, in token order
  (the official ``masked_select``), k = ``num_matches[0]`` for x -> y and ``num_matches[1]`` for y -> x
  (``None``: every token; the feature matching uses every token when ``feature_all_matches``);
* VICReg on matched (N, k, D) maps ``a, b``: ``inv * mse(a, b) + var * (mean relu(1 - std_n(a)) +
  mean relu(1 - std_n(b))) / 2 + cov * mean_k (off(C_a)^2 / D + off(C_b)^2 / D) / 2``, statistics over
  the images n per matched index, std with eps 1e-4;
* each of the two matchings averages its two directions; the term sums the feature and location
  matchings and averages over the pairs.

The image-level VICReg part is the usual ``vicreg`` composition; the method weights the two
``alpha`` / ``1 - alpha`` in YAML.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ebmssl.energies.tokens import PatchTerm, TokenSets, register_patch_term


def nearest_matches(distances: torch.Tensor, num_matches: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """For distances (N, T, S): indices (N, k) of the k query tokens whose nearest candidate is closest,
    in token order, and (N, k) the index of that nearest candidate."""
    nearest_distance, nearest = distances.min(dim=2)
    k = nearest_distance.shape[1] if num_matches is None or num_matches < 0 else min(int(num_matches), nearest_distance.shape[1])
    kept = nearest_distance.topk(k, dim=1, largest=False).indices.sort(dim=1).values
    return kept, nearest.gather(1, kept)


def matched_maps(x: torch.Tensor, y: torch.Tensor, distances: torch.Tensor, num_matches: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    kept, nearest = nearest_matches(distances, num_matches)
    pick = lambda maps, index: maps.gather(1, index.unsqueeze(-1).expand(-1, -1, maps.shape[-1]))  # noqa: E731
    return pick(x, kept), pick(y, nearest)


def local_vicreg(a: torch.Tensor, b: torch.Tensor, inv: float, var: float, cov: float, eps: float = 1e-4) -> torch.Tensor:
    """VICRegL's ``vicreg_loss`` on matched maps (N, k, D), its three coefficients applied."""
    invariance = F.mse_loss(a, b)
    a, b = a - a.mean(dim=0), b - b.mean(dim=0)
    variance = (F.relu(1.0 - torch.sqrt(a.var(dim=0) + eps)).mean() + F.relu(1.0 - torch.sqrt(b.var(dim=0) + eps)).mean()) / 2
    dim, count = a.shape[-1], a.shape[0]

    def off_diagonal_power(z: torch.Tensor) -> torch.Tensor:
        # sum of the squared off-diagonal entries as all minus diagonal: a boolean index would read the device
        c = torch.einsum("nkc,nkd->kcd", z, z) / (count - 1)
        return (c.pow(2).sum(dim=(1, 2)) - torch.diagonal(c, dim1=1, dim2=2).pow(2).sum(-1)) / dim

    covariance = ((off_diagonal_power(a) + off_diagonal_power(b)) / 2).mean()
    return inv * invariance + var * variance + cov * covariance


@register_patch_term("vicregl_local")
class VICRegLLocal(PatchTerm):
    """VICRegL local term over the online views' maps: VICReg on feature-matched plus location-matched tokens.

    ``num_matches``: [k forward, k backward] (official 20, 4); ``feature_all_matches``: feature matching
    keeps every token (official ``--l2-all-matches``); ``anchor_views``: how many leading views are
    anchors (the global views, 2); ``inv``/``var``/``cov``: VICReg coefficients (25, 25, 1).
    """

    family = "capacity"
    example_config = {"num_matches": [3, 2], "anchor_views": 1}
    example_tokens = ("online_positions",)
    collapse_sensitive = True

    def __init__(
        self,
        num_matches: Sequence[int | None] = (20, 4),
        feature_all_matches: bool = True,
        anchor_views: int = 2,
        inv: float = 25.0,
        var: float = 25.0,
        cov: float = 1.0,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        if len(num_matches) != 2:
            raise ValueError(f"num_matches takes two counts [forward, backward], got {num_matches!r}")
        if anchor_views < 1:
            raise ValueError(f"anchor_views must be >= 1, got {anchor_views}")
        self.num_matches = tuple(num_matches)
        self.feature_all_matches = bool(feature_all_matches)
        self.anchor_views = int(anchor_views)
        self.coefficients = (float(inv), float(var), float(cov))
        self.eps = float(eps)

    def _matched_term(self, x, y, d_xy, d_yx, counts) -> torch.Tensor:  # noqa: ANN001
        forward = local_vicreg(*matched_maps(x, y, d_xy, counts[0]), *self.coefficients, eps=self.eps)
        backward = local_vicreg(*matched_maps(y, x, d_yx, counts[1]), *self.coefficients, eps=self.eps)
        return forward / 2 + backward / 2

    def pair_term(self, x: torch.Tensor, y: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        feature_counts = (None, None) if self.feature_all_matches else self.num_matches
        d_xy = torch.cdist(x, y)
        by_feature = self._matched_term(x, y, d_xy, d_xy.transpose(1, 2), feature_counts)
        l_xy = torch.cdist(p.to(x.dtype), q.to(x.dtype))
        by_location = self._matched_term(x, y, l_xy, l_xy.transpose(1, 2), self.num_matches)
        return by_feature + by_location

    def loss(self, tokens: TokenSets) -> torch.Tensor:
        positions = tokens.require("online_positions", "vicregl_local")
        views = len(tokens.online)
        pairs = [(i, j) for i in range(min(self.anchor_views, views)) for j in range(views) if j != i]
        if not pairs:
            raise ValueError("vicregl_local needs at least two online views")
        total = None
        for i, j in pairs:
            value = self.pair_term(tokens.online[i], tokens.online[j], positions[i], positions[j])
            total = value if total is None else total + value
        return total / len(pairs)
