"""The jepa, masked_autoencoder and denoising_autoencoder architectures: contract, guard, config errors."""

from __future__ import annotations

import pytest
import torch

import ebmssl
from ebmssl.config import apply_overrides, load_config
from ebmssl.registry import ConfigError
from ebmssl.strategies.base import Progress
from ebmssl.models.architectures import build_learner
from ebmssl.models.architectures.base import LearnerOutput

TINY_VIT = {"num_layers": 1, "image_size": 16, "hidden_dim": 24, "num_heads": 2, "mlp_dim": 48}


def tiny_config(method: str, *overrides: str) -> dict:
    config = load_config(method, "methods")
    model = config["model"]
    if model["backbone"]["name"] == "vit":
        model["backbone"] = {**model["backbone"], **TINY_VIT}
    else:
        model["backbone"] = {"name": "small_cnn", "width": 4}
        model["image_size"] = 16
    if "token_predictor" in model:
        model["token_predictor"] = {"width": 16, "depth": 1, "num_heads": 2}
        model["masks"] = {**model["masks"], "min_keep": 2}
    if "decoder" in model and method == "mae":
        model["decoder"] = {"width": 16, "depth": 1, "num_heads": 2}
    return apply_overrides(config, list(overrides))


def build(config: dict) -> torch.nn.Module:
    return build_learner(config["model"], ebmssl.build_objective(config), 2, 3, where="test.yaml: model")


METHODS = ["ijepa", "jepa_vicreg", "jepa_sigreg", "mae", "denoising_ae"]


@pytest.mark.parametrize("method", METHODS)
def test_contract(method: str) -> None:
    torch.manual_seed(0)
    model = build(tiny_config(method))
    images = torch.randn(6, 3, 16, 16)
    out = model([images, images], torch.Generator().manual_seed(0))
    assert isinstance(out, LearnerOutput) and torch.isfinite(out.loss)
    assert out.features.shape == (6, model.encoder.output_dim) and not out.features.requires_grad
    out.loss.backward()
    assert model.encoder(images).shape == (6, model.encoder.output_dim)
    assert [e.shape[0] for e in model.embed([images, images])] == [6, 6]
    model.before_optimizer_step(Progress())
    logged = model.after_optimizer_step(Progress(step=1, total_steps=10))
    assert ("ema_momentum" in logged) == (method == "ijepa")
    assert hasattr(model.objective, "energy") and hasattr(model.objective, "set_progress")


@pytest.mark.parametrize(
    "method, family", [("ijepa", "asymmetry"), ("mae", "contrastive"), ("denoising_ae", "contrastive"), ("jepa_vicreg", None)]
)
def test_collapse_mechanisms(method: str, family: str | None) -> None:
    mechanisms = build(tiny_config(method)).collapse_mechanisms()
    assert [f for f, _ in mechanisms] == ([family] if family else [])
    assert all(isinstance(reason, str) and reason for _, reason in mechanisms)


def test_same_generator_same_loss_other_generator_other_loss() -> None:
    """Model-side randomness comes only from the batch generator (masks, noise)."""
    for method in ("ijepa", "mae", "denoising_ae"):
        torch.manual_seed(0)
        model = build(tiny_config(method))
        images = torch.randn(4, 3, 16, 16)
        losses = [model([images], generator=torch.Generator().manual_seed(s)).loss.item() for s in (1, 1, 2)]
        assert losses[0] == losses[1] and losses[0] != losses[2], method


def test_guard_refuses_a_method_without_collapse_prevention() -> None:
    config = tiny_config("jepa_vicreg", "objective.strategies=[]")
    with pytest.raises(ConfigError, match="nothing prevents collapse.*allow_collapse"):
        build(config)
    build(apply_overrides(config, ["objective.allow_collapse=true"]))
    noiseless = tiny_config("denoising_ae", "model.corruption.std=0.0")
    with pytest.raises(ConfigError, match="nothing prevents collapse"):
        build(noiseless)


@pytest.mark.parametrize(
    "method, override, message",
    [
        ("ijepa", "model.token_predicter={}", "unknown key `model.token_predicter`.*Did you mean `model.token_predictor`"),
        ("ijepa", "model.masks.num_target=2", "unknown key `model.masks.num_target`"),
        ("ijepa", "model.target_encoder=ema", "expected a momentum target mapping"),
        ("ijepa", "model.target_encoder.momentum=1.5", "momentum must lie in"),
        ("ijepa", "model.backbone={name: small_cnn}", "needs a patch-token backbone"),
        ("mae", "model.mask_ratio=1.0", "mask_ratio must lie in"),
        ("denoising_ae", "model.corruption.name=blur", "unknown corruption 'blur'"),
    ],
)
def test_bad_config_is_explained(method: str, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(tiny_config(method, override))
