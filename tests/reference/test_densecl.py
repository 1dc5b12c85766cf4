"""DenseCL exactness: configs/methods/densecl.yaml against WXinlong/DenseCL
openselfsup/models/densecl.py ``DenseCL.forward_train`` (single MoCo term and dense term with backbone-feature
matching, ``ContrastiveHead`` cross-entropy at T 0.2, loss_lambda 0.5) and ``_dequeue_and_enqueue2`` (the dense
queue of pooled, normalised key grids), written out below, float64, over two steps (the second sees both queues
after the first enqueue). lightly 1.6 has no DenseCL loss module.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ebmssl
from ebmssl.energies.tokens import TokenSets
from tests.reference._compare import assert_matches_reference, method_targets

DT = torch.float64


def contrastive_head(pos, neg, temperature=0.2):
    logits = torch.cat((pos, neg), dim=1) / temperature
    labels = torch.zeros(logits.shape[0], dtype=torch.long)
    return F.cross_entropy(logits, labels)


def official_densecl(q, k, q_grid, k_grid, q_b, k_b, queue, queue2, loss_lambda=0.5):
    """q, k (N, C) projections; q_grid, k_grid (N, C, S^2) dense projections; q_b, k_b (N, E, S^2) backbone maps;
    queue, queue2 (C, K) as the official buffers. Returns the loss and the keys each queue receives."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    k2 = F.normalize(k_grid.mean(dim=2), dim=1)  # the neck's avgpool of the dense key projection
    q_grid, k_grid = F.normalize(q_grid, dim=1), F.normalize(k_grid, dim=1)
    q_b, k_b = F.normalize(q_b, dim=1), F.normalize(k_b, dim=1)
    l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
    l_neg = torch.einsum("nc,ck->nk", [q, queue])
    backbone_sim_matrix = torch.matmul(q_b.permute(0, 2, 1), k_b)
    densecl_sim_ind = backbone_sim_matrix.max(dim=2)[1]
    indexed_k_grid = torch.gather(k_grid, 2, densecl_sim_ind.unsqueeze(1).expand(-1, k_grid.size(1), -1))
    densecl_sim_q = (q_grid * indexed_k_grid).sum(1)
    l_pos_dense = densecl_sim_q.view(-1).unsqueeze(-1)
    q_grid = q_grid.permute(0, 2, 1).reshape(-1, q_grid.size(1))
    l_neg_dense = torch.einsum("nc,ck->nk", [q_grid, queue2])
    loss = contrastive_head(l_pos, l_neg) * (1 - loss_lambda) + contrastive_head(l_pos_dense, l_neg_dense) * loss_lambda
    return loss, k, k2


@pytest.mark.parametrize("n,s,c,e,size", [(4, 3, 8, 6, 16), (6, 4, 5, 7, 9)])
def test_densecl_objective_matches_official_over_two_steps(n, s, c, e, size) -> None:
    config = ebmssl.load_config("densecl", "methods")
    config["objective"]["strategies"][0]["size"] = size
    config["objective"]["patch_terms"][0]["size"] = size
    objective = ebmssl.build_objective(config).double().train()
    g = torch.Generator().manual_seed(n + s + size)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=DT)  # noqa: E731
    for step in range(2):
        q, k = r(n, c).requires_grad_(), r(n, c)
        q_tokens, k_tokens = r(n, s * s, c).requires_grad_(), r(n, s * s, c)
        q_backbone, k_backbone = r(n, s * s, e).requires_grad_(), r(n, s * s, e)
        tokens = TokenSets(
            [q_tokens, r(n, s * s, c)], [r(n, s * s, c), k_tokens],
            online_features=[q_backbone, r(n, s * s, e)], target_features=[r(n, s * s, e), k_backbone],
        )
        if step == 0:
            objective.strategies[0].queue.ensure(c)
            objective.patch_terms[0].queue.ensure(c)
        queue = objective.strategies[0].queue.queue.clone().T
        queue2 = objective.patch_terms[0].queue.queue.clone().T
        out = objective([q, r(n, c)], method_targets("moco_v2", [r(n, c), k]), tokens=tokens)
        expected, key, key2 = official_densecl(
            q, k, q_tokens.transpose(1, 2), k_tokens.transpose(1, 2), q_backbone.transpose(1, 2), k_backbone.transpose(1, 2), queue, queue2
        )
        assert set(out.terms) == {"energy", "moco_queue", "densecl_dense"}
        assert_matches_reference(out.loss, expected, inputs=[q, q_tokens])
        # official _dequeue_and_enqueue2: the pooled, normalised keys overwrite the oldest rows (a ring)
        mirror = queue2.T.clone()
        mirror[(step * n + torch.arange(n)) % size] = key2
        torch.testing.assert_close(objective.patch_terms[0].queue.queue, mirror)
