"""transformers vision models as backbones: from config keys, from a saved folder, the local hub cache only."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import transformers

from ebmssl.models import build_backbone
from ebmssl.models.backbones.hf import HFBackbone
from ebmssl.registry import ConfigError
from ebmssl.training.trainer import Trainer
from tests.training.test_reliability import tiny

TINY_VIT = {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "image_size": 16, "patch_size": 4}
TINY_CONVNEXT = {"model_type": "convnext", "hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2}


def test_vit_from_config_keys_gives_the_class_token() -> None:
    torch.manual_seed(0)
    backbone = build_backbone({"name": "hf", "config": TINY_VIT, "in_channels": 1}).eval()
    assert isinstance(backbone.model, transformers.ViTModel) and backbone.model.config.num_channels == 1
    assert backbone.pool == "cls" and backbone.output_dim == 32 and backbone.prefers_channels_last is False
    assert backbone.model.pooler is None  # unused: no parameter without a gradient under DDP
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(backbone(x), backbone.model(pixel_values=x).last_hidden_state[:, 0])
    assert backbone(torch.rand(2, 1, 24, 24)).shape == (2, 32)  # other sizes: interpolated positions


def test_convnet_from_config_keys_gives_the_pooled_output() -> None:
    backbone = build_backbone({"name": "hf", "config": TINY_CONVNEXT}).eval()
    assert backbone.pool == "pooler" and backbone.output_dim == 16 and backbone.prefers_channels_last is True
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(backbone(x), backbone.model(pixel_values=x).pooler_output)


def test_saved_folder_loads_back_with_its_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = build_backbone({"name": "hf", "config": TINY_VIT}).eval()
    trained.model.save_pretrained(tmp_path / "tiny-vit")
    loaded = build_backbone({"name": "hf", "model": str(tmp_path / "tiny-vit")}).eval()
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(loaded(x), trained(x))
    fresh = build_backbone({"name": "hf", "model": str(tmp_path / "tiny-vit"), "pretrained": False}).eval()
    assert not torch.allclose(fresh(x), trained(x))


def test_hf_backbone_trains_a_few_steps(tmp_path: Path) -> None:
    config = tiny("simclr", "train.epochs=1", "train.max_steps=2")
    config["model"]["backbone"] = {"name": "hf", "config": TINY_VIT}
    trainer = Trainer(config, tmp_path)
    trainer.train()
    assert trainer.step == 2 and all(math.isfinite(r["loss"]) for r in trainer.history)
    assert isinstance(trainer.learner.encoder, HFBackbone)


def test_a_hub_id_without_a_local_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match=r"no local copy of the hub model 'google/vit-base-patch16-224'.*HF_HUB_OFFLINE"
                                          r".*hf download google/vit-base-patch16-224"):
        build_backbone({"name": "hf", "model": "google/vit-base-patch16-224"})


@pytest.mark.parametrize("spec, message", [
    ({}, r"give `model:`"),
    ({"config": {"model_type": "vitt"}}, r"'vitt' is not a transformers model type \(close matches: vit"),
    ({"config": TINY_VIT, "pool": "max"}, r"pool: 'max' is not one of"),
    ({"config": TINY_CONVNEXT, "pool": "cls"}, r"has no class token"),
    ({"model": "/no/such/folder"}, r"neither a model folder nor a hub id"),
])
def test_bad_input_is_a_config_error(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_backbone({"name": "hf", **spec})


def test_pretrained_channels_must_match_the_views(tmp_path: Path) -> None:
    build_backbone({"name": "hf", "config": TINY_VIT, "in_channels": 1}).model.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"takes 1-channel images but the views produce 3.*to_rgb"):
        build_backbone({"name": "hf", "model": str(tmp_path), "in_channels": 3})
