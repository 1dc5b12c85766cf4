"""The token-feeding architectures (feeds_tokens): iBOT/DINOv2 token distillation, SimMIM, VICRegL's local joint
embedding. Tiny ViTs (width 16, one block, 8-16 px); what reaches the objective, what gets gradient, bad configs."""

from __future__ import annotations

import pytest
import torch

import ebmssl
from ebmssl.config import load_config
from ebmssl.data.views.multicrop import MultiCropViews
from ebmssl.energies.masked_pixels import masked_l1
from ebmssl.energies.reconstruction import patchify
from ebmssl.models.architectures import build_learner
from ebmssl.models.architectures.local_features import token_positions
from ebmssl.registry import ConfigError
from ebmssl.strategies.base import Progress

VIT = {"name": "vit", "variant": "vit_tiny", "image_size": 16, "patch_size": 4, "num_layers": 1, "hidden_dim": 16, "num_heads": 2, "mlp_dim": 32}
HEAD = {"name": "dino_head", "output_dim": 8, "hidden_dim": 16, "bottleneck_dim": 8, "num_layers": 2}


def learner_for(method: str, **model):
    config = load_config(method, "methods")
    objective = ebmssl.build_objective(config)
    spec = {**config["model"], "backbone": {**config["model"]["backbone"], **VIT}, **model}
    for key in ("head", "patch_head"):
        if isinstance(spec.get(key), dict):
            spec[key] = HEAD
    for key in ("projector", "local_projector"):
        if isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], "hidden_dim": 16, "output_dim": 8}
    return build_learner(spec, objective, 2, 3)


def views(n: int = 4, local: int = 1, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 16, 16, generator=g) for _ in range(2)] + [torch.randn(n, 3, 8, 8, generator=g) for _ in range(local)]


@pytest.mark.parametrize("method,patch_head", [("ibot", "shared"), ("dinov2", "separate")])
def test_token_distillation_feeds_masked_tokens_and_trains_the_student_only(method: str, patch_head: str) -> None:
    learner = learner_for(method).train()
    captured = {}
    forward = learner.objective.forward
    learner.objective.forward = lambda *a, **k: captured.update(k) or forward(*a, **k)  # type: ignore[method-assign]
    out = learner(views(), generator=torch.Generator().manual_seed(3))
    tokens = captured["tokens"]
    assert len(tokens.online) == len(tokens.target) == len(tokens.masks) == 2  # the global views only
    # DINOv2 (patch_tokens: masked): round(0.5 x 2 x 4) masked crops in 2 chunks x floor(0.5 x 16) slots; iBOT: all
    rows, slots = (2, 8) if method == "dinov2" else (4, 16)
    assert tokens.online[0].shape == (rows, slots, 8) and tokens.masks[0].shape == (rows, slots)
    assert all(not t.requires_grad for t in tokens.target)  # the EMA teacher's
    assert "ibot_patch" in out.objective.terms and torch.isfinite(out.loss)
    out.loss.backward()
    student = learner.student
    assert student.mask_token.grad is not None and student.mask_token.grad.abs().sum() > 0
    assert (student.patch_head is None) == (patch_head == "shared")
    if student.patch_head is not None:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.patch_head.parameters())
    assert all(p.grad is None for p in learner.teacher.parameters())
    before = [p.clone() for p in learner.teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.1)
    learner.after_optimizer_step(Progress(step=1, total_steps=10, epoch=0.1, total_epochs=1))  # the one EMA
    assert any(not torch.equal(b, p) for b, p in zip(before, learner.teacher.parameters()))


@pytest.mark.parametrize("method,term", [("dinov2", {}), ("ibot", {"center_tokens": "masked"})])
def test_masked_patch_tokens_give_the_loss_and_gradients_of_every_token(method: str, term: dict) -> None:
    """``patch_tokens: masked`` (the heads on the masked slots only) equals ``all`` in float64: value and gradient."""
    config = load_config(method, "methods")
    config["objective"]["patch_terms"][0].update(term)
    learners, grads, default = [], [], torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # every module and every constant of the forward in float64
    try:
        for layout in ("all", "masked"):
            torch.manual_seed(0)
            spec = {**config["model"], "backbone": {**config["model"]["backbone"], **VIT}, "head": HEAD, "patch_tokens": layout}
            if isinstance(spec.get("patch_head"), dict):
                spec["patch_head"] = HEAD
            learners.append(build_learner(spec, ebmssl.build_objective(config), 2, 3).train())
        learners[1].load_state_dict(learners[0].state_dict())
        for seed in range(4):  # several draws: the masked crops fall unevenly on the two views
            grads = []
            for learner in learners:
                out = learner(views(n=6, local=2, seed=seed), generator=torch.Generator().manual_seed(seed))
                out.loss.backward()
                assert out.objective.terms["ibot_patch"].abs() > 0  # some image was masked
                grads.append((out.objective.terms["ibot_patch"].detach(), out.loss.detach(),
                              [p.grad.clone() if p.grad is not None else None for p in learner.student.parameters()]))
                learner.zero_grad(set_to_none=True)
            (term_all, loss_all, grad_all), (term_masked, loss_masked, grad_masked) = grads
            torch.testing.assert_close(term_masked, term_all, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(loss_masked, loss_all, rtol=1e-12, atol=1e-12)
            for a, b in zip(grad_all, grad_masked):
                assert (a is None) == (b is None)
                if a is not None:
                    torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    finally:
        torch.set_default_dtype(default)


def test_masked_student_tokens_differ_from_the_unmasked_ones_only_through_the_mask() -> None:
    learner = learner_for("ibot").eval()
    image = torch.randn(2, 3, 16, 16)
    none = torch.zeros(2, 16, dtype=torch.bool)
    assert torch.equal(learner.student.encode(image, none)[1], learner.student.encode(image)[1])
    with torch.no_grad():
        learner.student.mask_token.add_(1.0)
    some = none.clone()
    some[0, 3] = True
    assert not torch.equal(learner.student.encode(image, some)[1][0], learner.student.encode(image)[1][0])
    assert torch.equal(learner.student.encode(image, some)[1][1], learner.student.encode(image)[1][1])


def test_simmim_loss_is_the_l1_of_the_decoded_masked_patches() -> None:
    learner = learner_for("simmim").train()
    images = torch.randn(3, 3, 16, 16)
    generator = torch.Generator().manual_seed(5)
    out = learner([images], generator=generator)
    masks = learner.draw_masks(images, torch.Generator().manual_seed(5))
    assert masks.shape == (3, 16) and int(masks.sum(1).min()) == 16 - int(16 * 0.4)  # L - floor(L (1 - 0.6)) each
    prediction = learner.decoder(learner.branch.encode(images, masks)[1])
    expected = masked_l1(prediction, patchify(images, 4), masks, channels=3)
    torch.testing.assert_close(out.loss, expected)


def test_token_positions_are_patch_centres_in_image_pixels_and_mirror_with_the_flip() -> None:
    whole = torch.tensor([[0.0, 0.0, 16.0, 16.0, 0.0], [4.0, 2.0, 12.0, 10.0, 1.0]])
    positions = token_positions(whole, (4, 4))
    assert positions.shape == (2, 16, 2)
    torch.testing.assert_close(positions[0, :4, 0], torch.tensor([2.0, 6.0, 10.0, 14.0]))  # x along the first row
    torch.testing.assert_close(positions[0, ::4, 1], torch.tensor([2.0, 6.0, 10.0, 14.0]))  # y down the first column
    torch.testing.assert_close(positions[1, :4, 0], torch.tensor([11.0, 9.0, 7.0, 5.0]))  # mirrored crop, 2 px patches
    torch.testing.assert_close(positions[1, ::4, 1], torch.tensor([3.0, 5.0, 7.0, 9.0]))


def test_view_geometry_leaves_the_views_unchanged_and_describes_each_crop() -> None:
    pipeline = MultiCropViews(global_size=16, local_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, num_local=2)
    images = torch.rand(4, 3, 20, 20)
    plain = pipeline(images, torch.Generator().manual_seed(0))
    pipeline.view_geometry = True
    *same, geometry = pipeline(images, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(plain, same)) and len(same) == 4
    assert geometry.shape == (4, 4, 5)
    boxes = geometry[..., :4]
    assert bool((boxes >= 0).all() and (boxes[..., 2] <= 20).all() and (boxes[..., 0] < boxes[..., 2]).all())
    assert set(geometry[..., 4].unique().tolist()) <= {0.0, 1.0}


def test_local_joint_embedding_feeds_every_views_maps_with_positions() -> None:
    learner = learner_for("vicregl").train()
    captured = {}
    forward = learner.objective.forward
    learner.objective.forward = lambda *a, **k: captured.update(k) or forward(*a, **k)  # type: ignore[method-assign]
    geometry = torch.tensor([0.0, 0.0, 16.0, 16.0, 0.0]).repeat(4, 3, 1)
    out = learner(views() + [geometry])
    tokens = captured["tokens"]
    assert [t.shape[1] for t in tokens.online] == [16, 16, 4] and len(tokens.online_positions) == 3
    assert "vicregl_local" in out.objective.terms and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="crop boxes"):
        learner(views())


@pytest.mark.parametrize(
    "method,model,match",
    [
        ("ibot", {"masks": {"ratio": [0.6, 0.2]}}, r"masks.*ratio"),
        ("ibot", {"masks": {"ratoi": [0.1, 0.5]}}, r"ratoi"),
        ("ibot", {"masks": {"probability": 2}}, r"masks.*probability"),
        ("ibot", {"target": "none"}, r"target.*EMA"),
        ("ibot", {"patch_head": 3}, r"patch_head"),
        ("ibot", {"patch_tokens": "masked"}, r"patch_tokens.*ibot_patch.*center_tokens"),  # its centre reads every token
        ("dinov2", {"patch_tokens": "some"}, r"patch_tokens.*`all` or `masked`"),
        ("ibot", {"head": None}, r"head"),
        ("simmim", {"mask_patch_size": 6}, r"mask_patch_size"),
        ("simmim", {"mask_ratio": 1.0}, r"mask_ratio"),
        ("vicregl", {"backbone": {"name": "small_cnn", "width": 8}}, r"patch-token backbone"),
        # a timm ViT encodes a subset of patches but puts no mask token in place of masked ones
        ("ibot", {"backbone": {"name": "timm", "model": "vit_tiny_patch16_224", "img_size": 16, "patch_size": 4,
                               "depth": 1}}, r"mask token"),
        ("simmim", {"backbone": {"name": "timm", "model": "vit_tiny_patch16_224", "img_size": 16, "patch_size": 4,
                                 "depth": 1}}, r"mask token"),
    ],
)
def test_bad_model_sections_name_the_key(method: str, model: dict, match: str) -> None:
    config = load_config(method, "methods")
    spec = {**config["model"], "backbone": {**config["model"]["backbone"], **VIT}, **model}
    if "backbone" in model:
        spec["backbone"] = model["backbone"]
    with pytest.raises(ConfigError, match=match):
        build_learner(spec, ebmssl.build_objective(config), 2, 3)
