"""Patch terms in the objective: YAML composition, bad input as ConfigError, terms summing to the loss, state
(iBOT's centre, DenseCL's queue) surviving a state_dict round trip into a fresh objective (exact resume)."""

from __future__ import annotations

import pytest
import torch

import ebmssl
from ebmssl.energies.tokens import TokenSets
from ebmssl.registry import ConfigError

BASE = {"energy": {"name": "softmax_cross_entropy", "temperature": 0.1}, "strategies": [{"name": "dino_centering"}]}


@pytest.mark.parametrize(
    "patch_terms, message",
    [
        ([{"name": "ibot_pach"}], r"patch_terms\[0\].*unknown patch term 'ibot_pach'.*ibot_patch"),
        ([{"name": "ibot_patch", "centering": "median"}], r"patch_terms\[0\].*centering"),
        ([{"name": "ibot_patch", "weight": "one"}], r"patch_terms\[0\]\.weight expects a number"),
        ({"name": "ibot_patch"}, r"patch_terms must be a list"),
        ([{"name": "vicregl_local", "num_matches": [20]}], r"num_matches"),
        ([{"name": "masked_pixels", "channels": 0}], r"channels"),
    ],
)
def test_bad_patch_terms_are_config_errors(patch_terms, message) -> None:
    with pytest.raises(ConfigError, match=message):
        ebmssl.build_objective({**BASE, "patch_terms": patch_terms})


def _tokens(seed: int) -> tuple[list, list, TokenSets]:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    masks = [torch.rand(4, 6, generator=g) < 0.5 for _ in range(2)]
    feats = [r(4, 6, 3) for _ in range(2)]
    tokens = TokenSets([r(4, 6, 8) for _ in range(2)], [r(4, 6, 8) for _ in range(2)], masks,
                       online_features=feats, target_features=feats)
    return [r(4, 8) for _ in range(2)], [r(4, 8) for _ in range(2)], tokens


def test_terms_sum_to_the_loss_and_state_resumes_exactly() -> None:
    spec = {**BASE, "scale": 2.0, "patch_terms": [{"name": "ibot_patch", "weight": 0.5},
                                                   {"name": "densecl_dense", "size": 8, "label": "dense"}]}
    torch.manual_seed(0)
    first = ebmssl.build_objective(spec).train()
    for step in range(2):
        first(*_tokens(step)[:2], tokens=_tokens(step)[2])
    torch.manual_seed(1)  # a different random queue: only the state_dict can make them agree
    resumed = ebmssl.build_objective(spec).train()
    resumed.load_state_dict(first.state_dict())
    expected_ibot = 2.0 * 0.5 * first.patch_terms[0].loss(_tokens(5)[2])  # before the step moves the centre
    a, b = first(*_tokens(5)[:2], tokens=_tokens(5)[2]), resumed(*_tokens(5)[:2], tokens=_tokens(5)[2])
    assert set(a.terms) == {"energy", "ibot_patch", "dense"}
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=0)
    torch.testing.assert_close(sum(a.terms.values()), a.loss)
    torch.testing.assert_close(a.terms["ibot_patch"], expected_ibot)
