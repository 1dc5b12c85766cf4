"""timm backbones by name: several families train, timm ViTs are token encoders for the predictive methods,
weights from a local file or the local hub cache only, and every bad input is a ConfigError."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from ebmssl.models import build_backbone
from ebmssl.models.backbones.timm import TimmBackbone, TimmViTBackbone
from ebmssl.registry import ConfigError
from ebmssl.training.trainer import Trainer
from tests.training.test_reliability import tiny

# one of each family: ResNet, ConvNeXt, ViT, and two hybrids (CoAtNet: conv then attention stages; a ResNet
# stem under a ViT, here with 1x1 patches on its stride-16 features); ConvNeXt and CoAtNet downsample 32x,
# so they see 32 px images; (spec, class, prefers channels-last, image side)
FAMILIES = {
    "resnet": ({"model": "test_resnet"}, TimmBackbone, True, 16),
    "convnext": ({"model": "test_convnext"}, TimmBackbone, True, 32),
    "vit": ({"model": "test_vit", "img_size": 16, "patch_size": 4}, TimmViTBackbone, False, 16),
    "coatnet": ({"model": "test_coatnet", "img_size": 32}, TimmBackbone, True, 32),
    "resnet_vit_hybrid": ({"model": "vit_tiny_r_s16_p8_224", "img_size": 32, "patch_size": 1, "depth": 1}, TimmBackbone, True, 32),
}
TINY_VIT = {"name": "timm", "model": "test_vit", "img_size": 16, "patch_size": 4}


def train_steps(method: str, backbone: dict, tmp_path: Path, steps: int = 2, side: int = 16) -> Trainer:
    config = tiny(method, "train.epochs=1", f"train.max_steps={steps}")
    if side != 16:
        config["data"]["dataset"]["image_size"] = config["data"]["views"]["image_size"] = side
    config["model"]["backbone"] = backbone
    trainer = Trainer(config, tmp_path)
    before = [p.detach().clone() for p in trainer.learner.encoder.parameters()]
    trainer.train()
    losses = [r["loss"] for r in trainer.history]
    assert trainer.step == steps and losses and all(math.isfinite(v) for v in losses)
    after = list(trainer.learner.encoder.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before)), "the timm backbone did not train"
    return trainer


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_features_are_the_pre_logits(family: str) -> None:
    """forward = timm's forward_head(forward_features(x), pre_logits=True); width/channels-last from the model."""
    spec, kind, channels_last, side = FAMILIES[family]
    torch.manual_seed(0)
    backbone = build_backbone({"name": "timm", **spec, "in_channels": 1}).eval()
    assert type(backbone) is kind and backbone.prefers_channels_last is channels_last
    x = torch.rand(3, 1, side, side)
    model = backbone.model
    expected = model.forward_head(model.forward_features(x), pre_logits=True)
    out = backbone(x)
    assert out.shape == (3, backbone.output_dim) and torch.isfinite(out).all()
    torch.testing.assert_close(out, expected)
    assert model.num_classes == 0 and not any(name.startswith(("fc.", "head.fc.")) for name, _ in model.named_parameters())


@pytest.mark.parametrize("family, method", [("resnet", "simclr"), ("convnext", "byol"), ("vit", "simclr"),
                                            ("coatnet", "byol"), ("resnet_vit_hybrid", "simclr")])
def test_family_trains_a_few_steps(family: str, method: str, tmp_path: Path) -> None:
    trainer = train_steps(method, {"name": "timm", **FAMILIES[family][0]}, tmp_path, side=FAMILIES[family][3])
    assert trainer.learner.channels_last is FAMILIES[family][2]  # train.channels_last: auto follows the model


@pytest.mark.parametrize("method", ["mae", "ijepa", "msn"])
def test_predictive_methods_on_a_timm_vit(method: str, tmp_path: Path) -> None:
    backbone = dict(TINY_VIT)
    if method == "ijepa":  # I-JEPA's ViT has no class token and pools the mean final-normed patch token
        backbone.update(class_token=False, global_pool="avg", fc_norm=False)
    trainer = train_steps(method, backbone, tmp_path)
    assert isinstance(trainer.learner.encoder, TimmViTBackbone)


def test_timm_vit_token_encoder_contract() -> None:
    torch.manual_seed(0)
    backbone = build_backbone({**TINY_VIT, "reg_tokens": 2, "in_channels": 3}).eval()
    assert backbone.patch_size == 4 and backbone.grid(16, 16) == (4, 4) and backbone.pool == "cls"
    x = torch.rand(2, 3, 16, 16)
    cls, patches = backbone.tokens(x)
    assert cls.shape == (2, backbone.output_dim) and patches.shape == (2, 16, backbone.output_dim)
    everything = torch.arange(16).expand(2, -1)
    torch.testing.assert_close(backbone(x, everything), backbone(x))
    torch.testing.assert_close(backbone.pooled(cls, patches), backbone.model(x))
    # keeping a subset = running timm's own blocks on the prefix tokens and those patches (with their positions)
    keep = torch.tensor([[0, 5, 9, 15], [1, 2, 3, 4]])
    model = backbone.model
    embedded = model._pos_embed(model.patch_embed(x))
    prefix = model.num_prefix_tokens
    subset = torch.cat([embedded[:, :prefix], torch.stack([embedded[i, prefix + keep[i]] for i in range(2)])], dim=1)
    expected = model.norm(model.blocks(subset))
    kept_cls, kept = backbone.tokens(x, keep)
    torch.testing.assert_close(kept, expected[:, prefix:])
    torch.testing.assert_close(kept_cls, expected[:, 0])
    assert not torch.allclose(backbone(x, keep), backbone(x))


def test_dynamic_img_size_resizes_the_grid() -> None:
    backbone = build_backbone({**TINY_VIT, "dynamic_img_size": True})
    assert backbone.grid(24, 32) == (6, 8)
    cls, patches = backbone.tokens(torch.rand(1, 3, 24, 32))
    assert patches.shape[1] == 48


def test_weights_from_a_local_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = timm.create_model("test_resnet", num_classes=10)
    save_file(source.state_dict(), str(tmp_path / "weights.safetensors"))
    backbone = build_backbone({"name": "timm", "model": "test_resnet", "pretrained": str(tmp_path / "weights.safetensors")})
    loaded = backbone.model.state_dict()
    assert loaded.keys() == {k for k in source.state_dict() if not k.startswith("fc.")}
    for key, value in loaded.items():
        torch.testing.assert_close(value, source.state_dict()[key])
    assert backbone.model.num_classes == 0


def test_the_random_init_baseline_ignores_pretrained_weights(tmp_path: Path) -> None:
    from ebmssl.models import random_init_backbone

    torch.manual_seed(1)
    source = timm.create_model("test_resnet", num_classes=0)
    save_file(source.state_dict(), str(tmp_path / "weights.safetensors"))
    model = {"backbone": {"name": "timm", "model": "test_resnet", "pretrained": str(tmp_path / "weights.safetensors")}}
    pretrained = build_backbone({**model["backbone"], "in_channels": 3})
    baseline = random_init_backbone(model, 3, seed=0)
    again = random_init_backbone(model, 3, seed=0)
    key = "conv1.0.weight"
    assert torch.equal(pretrained.model.state_dict()[key], source.state_dict()[key])
    assert not torch.equal(baseline.model.state_dict()[key], source.state_dict()[key])
    assert torch.equal(baseline.model.state_dict()[key], again.model.state_dict()[key])  # seeded


def test_pretrained_reads_the_local_hub_cache_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match="no local copy .* never downloads .*hf download timm/test_resnet"):
        build_backbone({"name": "timm", "model": "test_resnet", "pretrained": True})
    # the cache layout huggingface_hub writes: models--OWNER--NAME/{refs/main, snapshots/REV/FILE}
    repo = timm.models.get_pretrained_cfg("test_resnet").hf_hub_id
    folder = tmp_path / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    (folder / "snapshots" / "abc123").mkdir(parents=True)
    torch.manual_seed(2)
    source = timm.create_model("test_resnet")
    save_file(source.state_dict(), str(folder / "snapshots" / "abc123" / "model.safetensors"))
    backbone = build_backbone({"name": "timm", "model": "test_resnet", "pretrained": True})
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(backbone.eval()(x), source.eval().forward_head(source.forward_features(x), pre_logits=True))


@pytest.mark.parametrize("spec, message", [
    ({"model": "resnet_18"}, r"timm has no model 'resnet_18'\. Close matches: resnet18"),
    ({"model": "convnext_atto", "in_chans": 3}, r"remove `in_chans:`.*views' channels"),
    ({"model": "test_resnet", "num_classes": 10}, r"remove `num_classes:`"),
    ({"model": "test_resnet", "widht": 3}, r"rejected the arguments \{'widht': 3\}"),
    ({"model": "test_resnet", "pretrained": "/nonexistent/w.safetensors"}, r"no weights file at"),
    ({"model": "hf-hub:timm/resnet18.a1_in1k"}, r"reads no hub id at run time.*local-dir:"),
])
def test_bad_input_is_a_config_error(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_backbone({"name": "timm", **spec})


@pytest.mark.parametrize("name, module, extra", [("timm", "timm", "timm"), ("hf", "transformers", "hf")])
def test_a_missing_extra_names_it(name: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    with pytest.raises(ConfigError, match=rf'optional extra `{extra}`.*pip install "ebmssl\[{extra}\]"'):
        build_backbone({"name": name, "model": "anything"})


@pytest.mark.parametrize("backbone", [{"name": "timm", "model": "test_resnet"},
                                      {**TINY_VIT, "class_token": False, "global_pool": "avg"}])  # norm after the pool
def test_predictive_architecture_refuses_a_backbone_without_normed_patch_tokens(backbone: dict, tmp_path: Path) -> None:
    config = tiny("ijepa")
    config["model"]["backbone"] = backbone
    with pytest.raises(ConfigError, match="cannot encode a subset of patches"):
        Trainer(config, tmp_path)


def test_mean_pooled_timm_vit_features_are_the_mean_normed_patch_token() -> None:
    backbone = build_backbone({**TINY_VIT, "class_token": False, "global_pool": "avg", "fc_norm": False}).eval()
    assert isinstance(backbone, TimmViTBackbone) and backbone.pool == "mean"
    x = torch.rand(2, 3, 16, 16)
    cls, patches = backbone.tokens(x)
    assert cls is None
    torch.testing.assert_close(backbone(x), patches.mean(dim=1))
    torch.testing.assert_close(backbone(x), backbone.model(x))


@pytest.mark.slow  # a warm-up and a recorded step on fake CUDA tensors: ~8 s each
@pytest.mark.parametrize("method, backbone", [
    ("mae", TINY_VIT),  # the token path (position embedding, gather of kept patches)
    ("simclr", {"name": "hf", "config": {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 1,
                                         "num_attention_heads": 2, "intermediate_size": 64, "image_size": 16,
                                         "patch_size": 4}}),
], ids=["mae-timm_vit", "simclr-hf_vit"])
def test_no_host_sync_inside_a_step(method: str, backbone: dict) -> None:
    """timm and transformers forwards add no host-device synchronisation to a step (the fake-CUDA dispatch
    recorder of tests/training/host_syncs.py: data-dependent ops, scalar reads, blocking copies)."""
    from tests.training.host_syncs import record

    syncs = record(method, f"model.backbone={json.dumps(backbone)}")
    found = dict(syncs.forward + syncs.backward)
    assert found == {}, f"{method} on {backbone['name']}: host-device synchronisations in one step: {found}"


@pytest.mark.parametrize("backbone, message", [
    ({"name": "timm", "model": "test_convnext"}, r"cannot encode the 3x16x16 views .*enough pixels"),  # 32x downsampling
    ({"name": "timm", "model": "vit_tiny_patch16_224", "depth": 1, "patch_size": 4},  # fixed 224 px input
     r"cannot encode the 3x16x16 views .*img_size: 16"),
])
def test_a_view_size_the_model_cannot_take_is_refused_by_the_check(backbone: dict, message: str) -> None:
    from ebmssl.training.build import check_run

    config = tiny("simclr")
    config["model"]["backbone"] = backbone
    with pytest.raises(ConfigError, match=message):
        check_run(config)
