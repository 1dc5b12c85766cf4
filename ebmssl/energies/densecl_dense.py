"""DenseCL's dense contrastive term: each query token against the key token most similar in backbone
features, with a queue of pooled dense keys as negatives.

Wang, Zhang, Shen, Kong, Li 2021, "Dense Contrastive Learning for Self-Supervised Visual Pre-Training"
(CVPR); official code github.com/WXinlong/DenseCL (openselfsup/models/densecl.py ``DenseCL.forward_train``,
openselfsup/models/necks.py ``DenseCLNeck``, heads/contrastive_head.py).

For a pair (query view i, key view j) with dense projections ``q = online[i]``, ``k = target[j]``
(N, T, D, l2-normalised here) and backbone tokens ``f_q = online_features[i]``, ``f_k = target_features[j]``
(normalised): each query token t is matched to ``s(t) = argmax_s <f_q,t, f_k,s>``; its positive logit is
``<q_t, k_s(t)>``, its negatives ``<q_t, u_m>`` for the queue rows ``u_m``;

    term = mean over pairs of mean_{n,t} CE([<q_t, k_s(t)>, <q_t, u_1>, ..., <q_t, u_K>] / T, label 0).

``update`` enqueues, for every key view used, ``normalize(mean_t k_raw)`` (the neck's pooled dense
output, normalised: the official ``queue2``), gathered from every process. The queue is this term's
own (DenseCL keeps it apart from the image-level ``moco_queue``). The image-level MoCo term and the
``1 - lambda`` / ``lambda`` weights are composed in YAML.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ebmssl.energies.tokens import PatchTerm, TokenSets, register_patch_term
from ebmssl.strategies.contrastive.queue import EmbeddingQueue


def matched_keys(query_features: torch.Tensor, key_features: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Per query token, the key token (N, T_q, D) whose backbone feature is most similar (cosine)."""
    similarity = F.normalize(query_features, dim=-1) @ F.normalize(key_features, dim=-1).transpose(1, 2)
    index = similarity.argmax(dim=2)
    return keys.gather(1, index.unsqueeze(-1).expand(-1, -1, keys.shape[-1]))


def dense_contrastive(queries: torch.Tensor, keys: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """``mean CE([<q, k>, <q, u_1..K>] / T, 0)`` over every query token; q, k (N, T, D) normalised, queue (K, D)."""
    positive = (queries * keys).sum(-1, keepdim=True)
    negatives = queries @ queue.T
    logits = torch.cat([positive, negatives], dim=-1) / temperature
    return (torch.logsumexp(logits, dim=-1) - logits[..., 0]).mean()


@register_patch_term("densecl_dense")
class DenseCLDense(PatchTerm):
    """DenseCL dense term (module docstring): ``size`` queue rows, ``temperature`` T (0.2), ``pairs`` [[i, j]]."""

    family = "contrastive"
    example_config = {"size": 32, "pairs": [[0, 1]]}
    example_tokens = ("online_features", "target_features")
    collapse_sensitive = True

    def __init__(self, size: int = 65536, temperature: float = 0.2, pairs: Sequence[Sequence[int]] = ((0, 1),), dim: int | None = None) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.pairs = [(int(i), int(j)) for i, j in pairs]
        if not self.pairs:
            raise ValueError("pairs must list at least one [query view, key view]")
        self.temperature = float(temperature)
        self.queue = EmbeddingQueue(size, dim, normalize=True)

    def bind_token_width(self, width: int) -> None:
        """Size the queue for the dense projections' ``width`` (the architecture calls this at build time)."""
        self.queue.ensure(int(width), "densecl_dense")

    def loss(self, tokens: TokenSets) -> torch.Tensor:
        online_features = tokens.require("online_features", "densecl_dense")
        target_features = tokens.require("target_features", "densecl_dense")
        self.queue.check(tokens.online[0][:, 0], "densecl_dense")
        queue = self.queue.snapshot(tokens.online[0][:, 0])
        total = None
        for i, j in self.pairs:
            queries = F.normalize(tokens.online[i], dim=-1)
            keys = matched_keys(online_features[i], target_features[j], F.normalize(tokens.target[j].detach(), dim=-1))
            value = dense_contrastive(queries, keys, queue.to(queries.dtype), self.temperature)
            total = value if total is None else total + value
        return total / len(self.pairs)

    @torch.no_grad()
    def update(self, tokens: TokenSets) -> None:
        for j in dict.fromkeys(j for _, j in self.pairs):
            self.queue.enqueue(tokens.target[j].detach().mean(dim=1))
