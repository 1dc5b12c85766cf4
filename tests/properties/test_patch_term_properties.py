"""Properties of every registered patch term (``PATCH_TERMS``): finite loss and gradient for any finite tokens,
invariance to permuting the images (with all their tokens) and to permuting token positions together (every
view, mask, position and feature at once) where the term is defined per token set, a collapsed batch worse than
a spread one where the term claims to prevent collapse, and the collapse guard counting the terms' families.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ebmssl
from ebmssl.energies.tokens import TokenSets
from ebmssl.models.collapse_guard import check_collapse
from ebmssl.registry import PATCH_TERMS, ConfigError
from tests.properties._support import PROPERTY_SETTINGS

DT = torch.float64
NAMES = PATCH_TERMS.names()
# term -> why it is not invariant to a joint permutation of token positions
ORDER_DEPENDENT = {
    "vicregl_local": "matched tokens keep their token order (official masked_select) and the variance/covariance are "
    "taken over images per matched index, so reordering the tokens pairs different tokens across images",
    "koleo_features": "it reads one pooled feature per image, no token set",
}


def build(name: str) -> torch.nn.Module:
    cls = PATCH_TERMS.get(name)
    return PATCH_TERMS.build({"name": name, **cls.example_config}).double()


def random_tokens(name: str, n: int, t: int, d: int, seed: int, scale: float = 1.0) -> TokenSets:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: scale * torch.randn(*s, generator=g, dtype=DT)  # noqa: E731
    fields = PATCH_TERMS.get(name).example_tokens
    masks = [torch.rand(n, t, generator=g) < 0.5 for _ in range(2)] if "masks" in fields else None
    positions = [torch.rand(n, t, 2, generator=g, dtype=DT) for _ in range(2)] if "online_positions" in fields else None
    features = [r(n, t, d + 1) for _ in range(2)] if "online_features" in fields else None
    if name == "koleo_features":
        features = [r(n, d + 1) for _ in range(2)]
    return TokenSets(
        online=[r(n, t, d).requires_grad_() for _ in range(2)],
        target=[r(n, t, d) for _ in range(2)],
        masks=masks,
        online_positions=positions,
        online_features=[f.requires_grad_() for f in features] if features else None,
        target_features=[r(n, t, d + 1) for _ in range(2)] if "target_features" in fields else None,
    )


def permuted(tokens: TokenSets, index: torch.Tensor, dim: int) -> TokenSets:
    """Every per-image tensor with ``index`` applied along ``dim`` (0: images, 1: token positions)."""

    def apply(views):
        if views is None:
            return None
        return [v.index_select(dim, index) if v.dim() > dim else v for v in views]

    return TokenSets(*(apply(getattr(tokens, f)) for f in (
        "online", "target", "masks", "online_positions", "target_positions", "online_features", "target_features")))


def evaluate(name: str, tokens: TokenSets) -> torch.Tensor:
    torch.manual_seed(0)  # queues start from the same random rows
    return build(name).loss(tokens)


shapes = st.tuples(st.integers(3, 6), st.integers(3, 7), st.integers(2, 5), st.integers(0, 10_000))


@pytest.mark.parametrize("name", NAMES)
@PROPERTY_SETTINGS
@given(shape=shapes, scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_finite_loss_and_gradient(name: str, shape, scale: float) -> None:
    n, t, d, seed = shape
    tokens = random_tokens(name, n, t, d, seed, scale)
    loss = evaluate(name, tokens)
    leaves = [v for v in tokens.online + (tokens.online_features or []) if v.requires_grad]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    assert torch.isfinite(loss), f"{name}: non-finite loss {loss}"
    assert all(g is None or torch.isfinite(g).all() for g in grads), f"{name}: non-finite gradient"


@pytest.mark.parametrize("name", NAMES)
@PROPERTY_SETTINGS
@given(shape=shapes)
def test_invariant_to_permuting_images_with_their_tokens(name: str, shape) -> None:
    n, t, d, seed = shape
    tokens = random_tokens(name, n, t, d, seed)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(evaluate(name, permuted(tokens, order, 0)), evaluate(name, tokens))


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ORDER_DEPENDENT])
@PROPERTY_SETTINGS
@given(shape=shapes)
def test_invariant_to_permuting_token_positions_together(name: str, shape) -> None:
    n, t, d, seed = shape
    tokens = random_tokens(name, n, t, d, seed)
    order = torch.randperm(t, generator=torch.Generator().manual_seed(seed + 1))
    torch.testing.assert_close(evaluate(name, permuted(tokens, order, 1)), evaluate(name, tokens))


def test_order_dependent_terms_really_depend_on_the_order() -> None:
    """The exemption above is needed: reordering VICRegL's tokens changes its local variance/covariance."""
    tokens = random_tokens("vicregl_local", 5, 6, 3, seed=4)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(evaluate("vicregl_local", permuted(tokens, order, 1)), evaluate("vicregl_local", tokens))


# -- collapse ----------------------------------------------------------------------------------------
def whitened(n: int, t: int, d: int, seed: int, std: float = 2.0) -> torch.Tensor:
    """(n, t, d) tokens whose per-position statistics over the images have covariance exactly std^2 I."""
    x = torch.randn(n, t, d, generator=torch.Generator().manual_seed(seed), dtype=DT)
    x = x - x.mean(0)
    out = []
    for k in range(t):
        cov = x[:, k].T @ x[:, k] / (n - 1)
        out.append(x[:, k] @ torch.linalg.inv(torch.linalg.cholesky(cov)).T * std)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("seed", range(3))
def test_vicregl_local_collapsed_maps_score_worse(seed: int) -> None:
    n, t, d = 12, 5, 3
    term = PATCH_TERMS.build({"name": "vicregl_local", "num_matches": [t, t], "anchor_views": 1}).double()
    positions = torch.rand(n, t, 2, generator=torch.Generator().manual_seed(seed), dtype=DT)
    spread = whitened(n, t, d, seed)
    collapsed = spread[:1].expand(n, t, d).clone()
    score = lambda maps: term.loss(TokenSets([maps, maps], [], online_positions=[positions, positions]))  # noqa: E731
    assert score(collapsed) > score(spread)
    torch.testing.assert_close(score(spread), torch.zeros((), dtype=DT))  # aligned, whitened: VICReg's minimum


@pytest.mark.parametrize("centering", ["mean", "sinkhorn"])
def test_ibot_patch_collapsed_teacher_gives_the_uniform_target(centering: str) -> None:
    """Centring (with sharpening) is what stops iBOT's collapse: a teacher whose tokens all agree, once centred,
    gives uniform targets, so even a student equal to the teacher scores log K, the worst entropy; a spread
    teacher that the student matches scores below it."""
    n, t, k = 6, 8, 10
    g = torch.Generator().manual_seed(0)
    term = PATCH_TERMS.build({"name": "ibot_patch", "teacher_temperature": 0.04, "centering": centering, "center_momentum": 0.0}).double()
    masks = [torch.ones(n, t, dtype=torch.bool)]

    def matched_student_loss(teacher: torch.Tensor) -> torch.Tensor:
        tokens = TokenSets([teacher.clone()], [teacher], masks)
        term.update(tokens)  # momentum 0: the centre becomes this batch's mean teacher token
        q = term.teacher_probabilities(tokens)[0].reshape(n, t, k)
        student = torch.log(q.clamp_min(1e-300)) * term.temperature  # softmax(student / tau_s) = q
        return term.loss(TokenSets([student], [teacher], masks))

    collapsed = torch.randn(1, 1, k, generator=g, dtype=DT).expand(n, t, k).clone()
    spread = 3 * torch.randn(n, t, k, generator=g, dtype=DT)
    assert matched_student_loss(collapsed).item() == pytest.approx(math.log(k), rel=1e-9)
    assert matched_student_loss(spread) < math.log(k) - 0.1


def test_densecl_dense_collapsed_batch_scores_worse() -> None:
    """Once the queue holds the batch's own pooled keys, a collapsed batch scores log(K + 1), a spread aligned one less."""
    n, t, d, size = 6, 4, 5, 24
    g = torch.Generator().manual_seed(1)
    spread = torch.randn(n, t, d, generator=g, dtype=DT)
    collapsed = spread[:1, :1].expand(n, t, d).clone()

    def score(tokens_value: torch.Tensor) -> torch.Tensor:
        term = PATCH_TERMS.build({"name": "densecl_dense", "size": size}).double()
        tokens = TokenSets([tokens_value, tokens_value], [tokens_value, tokens_value],
                           online_features=[tokens_value, tokens_value], target_features=[tokens_value, tokens_value])
        for _ in range(size // n):
            term.update(tokens)
        return term.loss(tokens)

    assert score(collapsed).item() == pytest.approx(math.log(size + 1), rel=1e-9)
    assert score(spread) < math.log(size + 1) - 0.1


def test_koleo_features_collapsed_batch_scores_worse() -> None:
    g = torch.Generator().manual_seed(2)
    spread = torch.randn(8, 4, generator=g, dtype=DT)
    term = PATCH_TERMS.build({"name": "koleo_features", "views": 1})
    score = lambda f: term.loss(TokenSets([], [], online_features=[f]))  # noqa: E731
    assert score(spread[:1].expand(8, 4)) > score(spread)


# -- the collapse guard ------------------------------------------------------------------------------
class _PlainArchitecture:
    """An architecture with no asymmetry of its own (no predictor, no target branch)."""

    def collapse_mechanisms(self) -> list:
        return []


def _objective(patch_terms: list) -> ebmssl.Objective:
    return ebmssl.build_objective({"energy": {"name": "cosine"}, "patch_terms": patch_terms})


def test_collapse_guard_counts_patch_term_families() -> None:
    for name, family in (("densecl_dense", "contrastive"), ("vicregl_local", "capacity"), ("ibot_patch", "asymmetry")):
        mechanisms = check_collapse(_PlainArchitecture(), _objective([{"name": name}]))
        assert any(f == family and name in reason for f, reason in mechanisms), mechanisms
    with pytest.raises(ConfigError, match="nothing prevents collapse"):
        check_collapse(_PlainArchitecture(), _objective([{"name": "masked_pixels"}]))


def test_patch_terms_without_tokens_are_refused() -> None:
    objective = _objective([{"name": "ibot_patch"}])
    with pytest.raises(ValueError, match="without `tokens=`"):
        objective([torch.randn(4, 3), torch.randn(4, 3)])
    from ebmssl.models.architectures import build_learner

    with pytest.raises(ConfigError, match="objective.patch_terms"):
        build_learner({"backbone": {"name": "small_cnn", "width": 8}}, objective, num_global=2, in_channels=3)
