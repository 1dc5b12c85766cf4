"""The vjepa architecture: contract (loss, gradients, EMA), masks from the batch generator, collapse guard and
config errors (every bad `model:` key a ConfigError naming it)."""

from __future__ import annotations

import copy

import pytest
import torch

import ebmssl
from ebmssl.config import load_config
from ebmssl.models.architectures import build_learner
from ebmssl.models.architectures.vjepa import OFFICIAL_MASKS
from ebmssl.registry import ConfigError
from ebmssl.strategies.base import Progress

TINY = {"num_frames": 4, "image_size": 16, "num_layers": 1, "hidden_dim": 24, "num_heads": 2, "mlp_dim": 48}


def tiny_config() -> dict:
    config = load_config("vjepa", "methods")
    config["model"]["backbone"] = {**config["model"]["backbone"], **TINY}
    config["model"]["token_predictor"] = {"width": 16, "depth": 1, "num_heads": 2}
    return config


def build(config: dict) -> torch.nn.Module:
    return build_learner(config["model"], ebmssl.build_objective(config), 1, 1, where="test.yaml: model")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build(tiny_config())


def clips(seed: int = 0) -> torch.Tensor:
    return torch.randn(4, 4, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_contract_gradients_and_ema(model: torch.nn.Module) -> None:
    model.zero_grad()
    out = model([clips(), clips(1)], torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and out.features.shape == (4, 24) and not out.features.requires_grad
    out.loss.backward()
    target = model.encoders()["target"]
    assert all(p.grad is not None for p in model.context_encoder.parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())  # both mask tokens are used
    assert all(p.grad is None for p in target.parameters())
    assert model.encoder(clips()).shape == (4, 24) and [e.shape for e in model.embed([clips()])] == [(4, 24)]
    with torch.no_grad():
        for p in model.context_encoder.parameters():
            p.add_(0.1)
    before = [p.clone() for p in target.parameters()]
    logged = model.after_optimizer_step(Progress(step=0, total_steps=10))
    assert logged["ema_momentum"] == pytest.approx(0.998)
    moved = [(p - b).abs().max().item() for p, b in zip(target.parameters(), before)]
    assert max(moved) == pytest.approx(0.1 * 0.002, rel=1e-3)
    assert model.collapse_mechanisms() and model.collapse_mechanisms()[0][0] == "asymmetry"


def test_masks_come_from_the_batch_generator(model: torch.nn.Module) -> None:
    x = clips()
    with torch.no_grad():
        same = [model([x], torch.Generator().manual_seed(s)).loss.item() for s in (3, 3, 4)]
    assert same[0] == same[1] != same[2]
    masks = model.sample_masks(x, torch.Generator().manual_seed(3))
    lengths = model.mask_lengths[(2, 4, 4)]
    assert [(m.context.shape[1], m.targets.shape[1]) for m in masks] == [(k.context, k.target) for k in lengths]


def test_default_masks_are_the_official_pair() -> None:
    config = tiny_config()
    del config["model"]["masks"]
    assert build(config).mask_configs == [dict(m) for m in OFFICIAL_MASKS]


def test_shared_target_encoder_needs_a_capacity_term() -> None:
    config = tiny_config()
    config["model"]["target_encoder"] = "shared"
    with pytest.raises(ConfigError, match="collapse"):
        build(config)
    config["objective"]["strategies"] = [{"name": "vicreg_variance", "weight": 1.0}]
    model = build(config)
    model([clips()], torch.Generator().manual_seed(0)).loss.backward()
    assert model.encoders().keys() == {"online"}


@pytest.mark.parametrize("edit, message", [
    (lambda m, o: m.update(masks={"num_blocks": 8}), "`model.masks` .* expects Sequence"),
    (lambda m, o: m.update(masks=[]), "model.masks: expected a non-empty list"),
    (lambda m, o: m["masks"][0].update(num_block=8), "model.masks.0.num_block"),
    (lambda m, o: m["masks"][1].update(spatial_scale=[0.7, 1.5]), r"model.masks.1.spatial_scale: expected 0 < low <= high <= 1"),
    (lambda m, o: m["masks"][0].update(aspect_ratio=[2.0]), r"model.masks.0.aspect_ratio: expected \[low, high\]"),
    (lambda m, o: m["masks"][0].update(temporal_scale=["a", 1]), r"model.masks.0.temporal_scale: expected \[low, high\]"),
    (lambda m, o: m["masks"][0].update(max_keep=True), "model.masks.0.max_keep: expected an integer >= 1"),
    (lambda m, o: m["masks"][0].update(num_blocks=0), "model.masks.0.num_blocks: expected an integer >= 1"),
    (lambda m, o: m["masks"][0].update(max_temporal_keep=0.0), "model.masks.0.max_temporal_keep"),
    (lambda m, o: m["masks"][1].update(spatial_scale=[1.0, 1.0], aspect_ratio=[1.0, 1.0]), "model.masks.1: .*cover the whole"),
    (lambda m, o: m.update(masks=m["masks"][:1]), r"set `objective.pairs: \[\[0, 1\]\]`"),
    (lambda m, o: o.update(pairs=[[0, 1], [2, 3]]), r"set `objective.pairs: \[\[0, 2\], \[1, 3\]\]`"),
    (lambda m, o: m.update(backbone={"name": "vit", "variant": "vit_tiny", "image_size": 16, "patch_size": 4, "num_layers": 1}), "clip token encoder"),
    (lambda m, o: m["token_predictor"].update(num_heads=3), "model.token_predictor: width 16 is not divisible"),
    (lambda m, o: m["token_predictor"].update(heads=3), "model.token_predictor.heads"),
    (lambda m, o: m.update(target_encoder={"momentum": 1.5}), "model.target_encoder"),
    (lambda m, o: m.pop("backbone"), "no `backbone:`"),
])  # fmt: skip
def test_bad_config_is_a_config_error_naming_the_key(edit, message: str) -> None:
    config = copy.deepcopy(tiny_config())
    edit(config["model"], config["objective"])
    with pytest.raises(ConfigError, match=message):
        build(config)
