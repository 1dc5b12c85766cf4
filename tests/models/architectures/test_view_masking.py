"""``model.mask_views`` in the joint-embedding architecture: the online backbone encodes the chosen views with
the drawn patch subsets, every other view and the target branch see whole views, the loss is a pure function
of the batch generator; a backbone without token masking is a ConfigError; MSN with a ViT trains end to end."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ebmssl
from ebmssl.registry import ConfigError
from ebmssl.models.architectures import build_learner
from ebmssl.models.architectures.joint_embedding import Learner

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)
TINY_VIT = {"name": "vit", "variant": "vit_tiny", "image_size": 16, "patch_size": 4, "num_layers": 1, "hidden_dim": 24, "num_heads": 2, "mlp_dim": 48}
PROJECTOR = {"name": "mlp", "hidden_dim": 16, "output_dim": 8}
MSN_LIKE = {
    "energy": {"name": "softmax_cross_entropy", "temperature": 0.1},
    "strategies": [{"name": "msn_prototypes", "num_prototypes": 6, "target_view": 0}, {"name": "me_max"}],
    "pair_reduction": "mean",
}
SIMCLR_LIKE = {"energy": {"name": "cosine", "temperature": 0.5}, "strategies": [{"name": "infonce"}]}


def build(mask_views: dict[str, Any] | None, target: Any = None, objective: dict[str, Any] | None = None, projector: Any = PROJECTOR) -> Learner:
    torch.manual_seed(0)
    model = {"backbone": TINY_VIT, "projector": projector, "mask_views": mask_views}
    if target is not None:
        model["target"] = target
    return build_learner(model, ebmssl.build_objective(copy.deepcopy(objective or MSN_LIKE)), 2, 3)


def views(batch: int = 6, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 16, 16, generator=g) for _ in range(2)] + [torch.randn(batch, 3, 8, 8, generator=g) for _ in range(3)]


def objective_inputs(learner: Learner, vs: list[torch.Tensor], generator: torch.Generator) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """The (online, target) views the learner hands its objective."""
    seen: dict[str, Any] = {}
    handle = learner.objective.register_forward_pre_hook(lambda module, args: seen.update(args=args))
    try:
        learner(vs, generator=generator)
    finally:
        handle.remove()
    online, target = seen["args"]
    return online, target


# -- the online branch ------------------------------------------------------------------------------------
@SETTINGS
@given(st.floats(0.0, 0.9), st.integers(0, 2**31 - 1), st.booleans(), st.booleans())
def test_masked_views_are_encoded_from_their_kept_tokens_and_the_rest_whole(ratio, seed, per_sample, together) -> None:
    learner = build({"ratio": ratio, "views": "global", "skip": [0], "per_sample": per_sample})
    learner.together = together
    vs = views(seed=seed % 7)
    keeps = learner.draw_masks(vs, torch.Generator().manual_seed(seed))
    assert [k is None for k in keeps] == [True, False, True, True, True]
    assert keeps[1].shape == (6, max(int(16 * (1 - ratio)), 1))
    features, _ = learner.online(vs, together, keeps)
    backbone = learner.online.backbone
    torch.testing.assert_close(features[1], backbone(vs[1], keeps[1]))
    for index in (0, 2, 3, 4):  # unmasked views: exactly what the backbone gives without masks
        torch.testing.assert_close(features[index], backbone(vs[index]))


def test_masking_changes_the_masked_views_features_only() -> None:
    learner = build({"ratio": 0.5, "views": [1, 3]})
    vs = views()
    masked, _ = learner.online(vs, True, learner.draw_masks(vs, torch.Generator().manual_seed(0)))
    whole, _ = learner.online(vs, True)
    for index in range(5):
        assert torch.equal(masked[index], whole[index]) == (index not in (1, 3))


def test_embed_and_the_probe_view_see_whole_views() -> None:
    learner = build({"ratio": 0.5, "views": "all", "skip": [0]})
    vs = views()
    out = learner(vs, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.features, learner.online.backbone(vs[0]))
    full = build(None)
    torch.testing.assert_close(learner.embed(vs[:2])[1], full.embed(vs[:2])[1])


# -- the target branch ------------------------------------------------------------------------------------------
def test_an_ema_target_encodes_the_whole_global_views() -> None:
    learner = build({"ratio": 0.5, "views": "global"}, target={"name": "ema", "momentum": 0.99})
    vs = views()
    _, target = objective_inputs(learner, vs, torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = learner.target.branch(vs[:2], True)[1]
    for t, e in zip(target, expected):
        torch.testing.assert_close(t, e)


@pytest.mark.parametrize("target", ["online", "stop_gradient"])
def test_targets_from_the_online_branch_come_from_the_whole_global_views(target: str) -> None:
    learner = build({"ratio": 0.5, "views": "global"}, target=target, objective={"energy": {"name": "softmax_cross_entropy"}, "strategies": ["sinkhorn"]})
    vs = views()
    online, targets = objective_inputs(learner, vs, torch.Generator().manual_seed(0))
    expected = learner.online(vs[:2], True)[1]  # the online branch on the whole global views
    for t, e, o in zip(targets, expected, online):
        torch.testing.assert_close(t, e)
        assert not torch.allclose(t, o)  # the online views themselves were masked
    assert all(t.requires_grad == (target == "online") for t in targets)


def test_without_masks_the_learner_is_unchanged() -> None:
    vs = views()
    plain, masked_none = build(None), build({"ratio": 0.0, "views": "all"})
    a = plain(vs, generator=torch.Generator().manual_seed(0)).loss
    b = masked_none(vs, generator=torch.Generator().manual_seed(0)).loss
    torch.testing.assert_close(a, b)  # ratio 0 keeps every token (in sorted order)


# -- a pure function of the generator ----------------------------------------------------------------------------
@SETTINGS
@given(st.integers(0, 2**31 - 1), st.floats(0.05, 0.8))
def test_the_loss_is_a_pure_function_of_the_batch_generator(seed, ratio) -> None:
    first = build({"ratio": ratio, "views": "global", "skip": [0]}, target={"name": "ema"})
    second = copy.deepcopy(first)
    vs = views()
    a = first(vs, generator=torch.Generator().manual_seed(seed)).loss
    torch.manual_seed(seed + 1)  # the global RNG plays no part
    b = second(vs, generator=torch.Generator().manual_seed(seed)).loss
    assert torch.equal(a, b)


def test_different_generators_give_different_losses() -> None:
    learner, vs = build({"ratio": 0.5, "views": "global", "skip": [0]}, target={"name": "ema"}), views()
    a = learner(vs, generator=torch.Generator().manual_seed(0)).loss
    b = learner(vs, generator=torch.Generator().manual_seed(1)).loss
    assert not torch.equal(a, b)


# -- config ------------------------------------------------------------------------------------------------------------
def test_a_cnn_backbone_with_mask_views_is_a_config_error_naming_the_key() -> None:
    model = {"backbone": {"name": "small_cnn", "width": 8}, "projector": PROJECTOR, "mask_views": {"ratio": 0.15}}
    with pytest.raises(ConfigError, match=r"msn_run.yaml: model.mask_views: the backbone \(SmallCNN\).*ViT backbone.*remove `mask_views:`"):
        build_learner(model, ebmssl.build_objective(copy.deepcopy(SIMCLR_LIKE)), 2, 3, "msn_run.yaml: model")


def test_the_msn_config_masks_the_global_anchor_views_only() -> None:
    config = ebmssl.load_config("msn", "methods")
    assert config["model"]["backbone"]["name"] == "vit"
    assert config["model"]["mask_views"] == {"ratio": 0.15, "views": "global", "skip": [0], "per_sample": False}
    config["objective"]["strategies"][0].update(num_prototypes=6)
    config["model"]["projector"].update(hidden_dim=16, output_dim=8)
    config["model"]["backbone"].update(image_size=16, num_layers=1, hidden_dim=24, num_heads=2, mlp_dim=48)
    learner = build_learner(config["model"], ebmssl.build_objective(config), 2, 3)
    keeps = learner.draw_masks(views(), torch.Generator().manual_seed(0))
    assert [None if k is None else tuple(k.shape) for k in keeps] == [None, (6, 13), None, None, None]
    assert torch.equal(keeps[1], keeps[1][:1].expand_as(keeps[1]))  # one subset per view, as the official randperm


# -- end to end -------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_msn_with_a_masked_vit_trains_end_to_end(tmp_path: Path) -> None:
    from tests.training.test_parity_methods_end_to_end import tiny_run_config

    from ebmssl.training.run import run_training

    config = tiny_run_config("msn")
    assert config["model"]["backbone"]["name"] == "vit" and config["model"]["mask_views"]["ratio"] == 0.15
    report = run_training(config, tmp_path / "msn")
    records = [json.loads(line) for line in (tmp_path / "msn" / "metrics.jsonl").read_text().splitlines()]
    assert report["training"]["steps"] == 3 and [r["step"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in records)
    assert (tmp_path / "msn" / "backbone.safetensors").is_file()


@pytest.mark.slow
def test_a_resumed_masked_msn_run_logs_the_uninterrupted_runs_losses(tmp_path: Path) -> None:
    """The anchors' masks of step s come from the batch generator of step s: resume is exact."""
    from tests.training.test_resume import losses

    from ebmssl.config import apply_overrides, load_config
    from ebmssl.training.run import run_training
    from tests.training.test_methods_end_to_end import tiny_run_config

    config = tiny_run_config("msn")
    assert config["model"]["mask_views"]["ratio"] == 0.15
    config["train"].update({"epochs": 2, "max_steps": None, "deterministic": True})
    config["eval"]["final"] = False
    run_training(config, tmp_path / "full")
    run_training(apply_overrides(config, ["train.stop_at_step=3"]), tmp_path / "split")
    saved = load_config(tmp_path / "split" / "config.yaml")
    run_training(apply_overrides(saved, ["train.stop_at_step=null"]), tmp_path / "split", resume=True)
    full, split = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert sorted(split) == sorted(full) == list(range(1, 9))
    for step in full:
        for key, value in full[step].items():
            assert split[step][key] == pytest.approx(value, rel=1e-6, abs=1e-7), (step, key)
