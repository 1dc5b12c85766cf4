"""The joint-embedding architecture: the collapse guard over model + objective, freeze schedules, sizes bound
from the heads, the model-section key check, and every shipped method config building."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

import ebmssl
from ebmssl.config import available_configs, load_config
from ebmssl.models.collapse_guard import check_collapse
from ebmssl.registry import ConfigError
from ebmssl.strategies.base import Progress
from ebmssl.models.architectures import build_learner
from ebmssl.models.architectures.joint_embedding import Learner
from tests.training.test_methods_end_to_end import tiny_backbone

BACKBONE = {"name": "small_cnn", "width": 8}
TINY_VIT = {"name": "vit", "variant": "vit_tiny", "image_size": 16, "patch_size": 4, "num_layers": 1, "hidden_dim": 24, "num_heads": 2, "mlp_dim": 48}
PROJECTOR = {"name": "mlp", "hidden_dim": 16, "output_dim": 8}
PREDICTOR = {"name": "mlp", "hidden_dim": 16, "output_dim": 8}
POSITIVE_ONLY = {"energy": {"name": "cosine"}, "strategies": []}
THREE_WAYS_OUT = ("contrastive", "asymmetry", "capacity", "model.predictor", "stop_gradient", "name: ema", "allow_collapse")


def build(model: dict[str, Any], objective: dict[str, Any] | None = None, num_global: int = 2) -> Learner:
    spec = {"backbone": BACKBONE, "projector": PROJECTOR, **model}
    return build_learner(spec, ebmssl.build_objective(copy.deepcopy(objective or POSITIVE_ONLY)), num_global, 3)


def step(learner: Learner, epoch: float) -> None:
    learner.train()
    learner.zero_grad()
    views = [torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    learner(views).loss.backward()
    learner.before_optimizer_step(Progress(step=0, total_steps=10, epoch=epoch, total_epochs=2))


# -- the collapse guard ----------------------------------------------------------------------------------
REFUSED = {
    "predictor_without_target": ({"predictor": PREDICTOR, "target": "none"}, "receive gradient"),
    "predictor_with_shared_target": ({"predictor": PREDICTOR, "target": "online"}, "receive gradient"),
    "stop_gradient_alone": ({"target": "stop_gradient"}, "without a predictor"),
    "ema_target_alone": ({"target": {"name": "ema", "momentum": 0.99}}, "without a predictor"),
    "nothing_at_all": ({"target": "none"}, "nothing prevents collapse"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_composition_is_explained_with_the_three_ways_out(case: str) -> None:
    model, why = REFUSED[case]
    with pytest.raises(ConfigError) as info:
        build(model)
    message = str(info.value)
    for phrase in (why, "nothing prevents collapse", *THREE_WAYS_OUT):
        assert phrase in message, f"{case}: {phrase!r} missing from: {message}"
    assert "\n" not in message


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_allow_collapse_builds_every_refused_composition(case: str) -> None:
    model, _ = REFUSED[case]
    learner = build(model, {**POSITIVE_ONLY, "allow_collapse": True})
    assert isinstance(learner, Learner)


@pytest.mark.parametrize(
    "model,objective,family",
    [
        ({"predictor": PREDICTOR, "target": "stop_gradient"}, POSITIVE_ONLY, "asymmetry"),
        ({"predictor": PREDICTOR, "target": {"name": "ema", "momentum": 0.99}}, POSITIVE_ONLY, "asymmetry"),
        ({"target": "stop_gradient"}, {"energy": {"name": "cosine"}, "strategies": [{"name": "vicreg_variance"}]}, "capacity"),
        ({"predictor": PREDICTOR, "target": "online"}, {"energy": {"name": "cosine"}, "strategies": ["infonce"]}, "contrastive"),
    ],
)
def test_accepted_compositions_name_their_mechanism(model, objective, family) -> None:
    learner = build(model, objective)
    families = [f for f, _ in check_collapse(learner, learner.objective)]
    assert family in families


def test_guard_runs_for_every_architecture() -> None:
    """build_learner guards whatever the architecture builder returns, through collapse_mechanisms()."""
    from ebmssl.registry import ARCHITECTURES

    class Bare(torch.nn.Module):
        def collapse_mechanisms(self):
            return []

    name = "test_bare_architecture"
    ARCHITECTURES.register(name)(lambda **arguments: Bare())
    objective = ebmssl.build_objective(copy.deepcopy(POSITIVE_ONLY))
    with pytest.raises(ConfigError, match="nothing prevents collapse"):
        build_learner({"architecture": name}, objective, 2, 3)

    class Regularised(Bare):
        def collapse_mechanisms(self):
            return [("capacity", "a latent bottleneck")]

    ARCHITECTURES.register(name + "_2")(lambda **arguments: Regularised())
    assert isinstance(build_learner({"architecture": name + "_2"}, objective, 2, 3), Regularised)


# -- every shipped method ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("method", available_configs("methods"))
def test_every_shipped_method_builds_with_a_collapse_mechanism(method: str) -> None:
    config = load_config(method, "methods")
    objective = ebmssl.build_objective(config)
    views = config.get("views") or {}
    model = {**config["model"], "backbone": tiny_backbone(config["model"].get("backbone") or {})}
    if "image_size" in model:  # decoders sized for the image (denoising auto-encoder)
        model["image_size"] = 16
    if isinstance(model.get("projector"), dict) and model["projector"].get("name") == "truncate":
        model["projector"] = {**model["projector"], "dim": 4}  # DirectCLR keeps 360 of ResNet's 512; the test CNN has 8
    learner = build_learner(model, objective, int(views.get("num_global", 2)), 3)
    assert check_collapse(learner, objective) or objective.energy_weight == 0.0


# -- freeze schedules ------------------------------------------------------------------------------------
def test_head_freeze_epochs_cancels_that_heads_gradients_only_while_due() -> None:
    projector = [PROJECTOR, {"name": "prototypes", "num_prototypes": 5, "freeze_epochs": 1}]
    learner = build({"projector": projector, "target": "online"}, {"energy": {"name": "softmax_cross_entropy"}, "strategies": ["sinkhorn"]})
    prototypes = learner.online.projector[1].prototypes.weight
    step(learner, epoch=0.99)
    assert prototypes.grad is None
    assert all(p.grad is not None for p in learner.online.projector[0].parameters())
    step(learner, epoch=1.0)
    assert prototypes.grad is not None


def test_dino_head_freezes_its_last_layer_for_the_first_epoch_by_default() -> None:
    head = {"name": "dino_head", "output_dim": 12, "hidden_dim": 16, "bottleneck_dim": 8}
    target = {"name": "ema", "momentum": 0.996}
    learner = build({"projector": head, "target": target}, {"energy": {"name": "softmax_cross_entropy"}, "strategies": ["dino_centering"]})
    last = [p for p in learner.online.projector.last_layer.parameters() if p.requires_grad]
    assert last
    step(learner, epoch=0.5)
    assert all(p.grad is None for p in last)
    assert all(p.grad is not None for p in learner.online.projector.mlp.parameters())
    step(learner, epoch=1.0)
    assert all(p.grad is not None for p in last)
    unfrozen = build({"projector": {**head, "freeze_last_layer_epochs": 0}, "target": target},
                     {"energy": {"name": "softmax_cross_entropy"}, "strategies": ["dino_centering"]})
    step(unfrozen, epoch=0.0)
    assert all(p.grad is not None for p in unfrozen.online.projector.last_layer.parameters() if p.requires_grad)


def test_former_trainer_freeze_key_is_refused_with_the_fix() -> None:
    from ebmssl.schema import TrainSection, check_keys, keys

    with pytest.raises(ConfigError, match="freeze_epochs: 1"):
        check_keys({"freeze_prototypes_epochs": 1}, keys(TrainSection), "train.", "run.yaml")


# -- sizes said once -------------------------------------------------------------------------------------
def test_builder_sizes_the_strategies_from_the_heads() -> None:
    swav = build(
        {"projector": [PROJECTOR, {"name": "prototypes", "num_prototypes": 7}], "target": "online"},
        {"energy": {"name": "softmax_cross_entropy"}, "strategies": [{"name": "sinkhorn", "queue_length": 4}]},
    )
    assert swav.objective.strategies[0].num_prototypes == 7 and swav.objective.strategies[0].queue.shape[-1] == 7
    dino = build(
        {"projector": {"name": "dino_head", "output_dim": 11, "hidden_dim": 16, "bottleneck_dim": 8}, "target": {"name": "ema"}},
        {"energy": {"name": "softmax_cross_entropy"}, "strategies": ["dino_centering"]},
    )
    assert dino.objective.strategies[0].center.shape == (1, 11)
    moco = build({"target": {"name": "ema"}}, {"energy": {"name": "cosine"}, "strategies": [{"name": "moco_queue", "size": 16}]})
    assert moco.objective.strategies[0].queue.queue.shape == (16, PROJECTOR["output_dim"])
    nnclr = build(
        {"predictor": {**PREDICTOR, "output_dim": 8}, "target": "online"},
        {"energy": {"name": "cosine"}, "strategies": [{"name": "nnclr", "size": 16}, {"name": "infonce", "negatives": "cross", "anchor": "target"}]},
    )
    assert nnclr.objective.strategies[0].support.queue.shape == (16, PROJECTOR["output_dim"])
    sigreg = build({"target": "none"}, {"energy": {"name": "squared_euclidean"}, "strategies": [{"name": "sigreg", "center_target": True}]}, num_global=3)
    assert sigreg.objective.strategies[0].bound_global_views == 3


def test_a_size_that_disagrees_with_the_head_is_explained() -> None:
    with pytest.raises(ConfigError) as info:
        build({"target": {"name": "ema"}}, {"energy": {"name": "cosine"}, "strategies": [{"name": "moco_queue", "size": 16, "dim": 5}]})
    assert "dim=5" in str(info.value) and "remove `dim:`" in str(info.value)


# -- the model section ------------------------------------------------------------------------------------
def test_unknown_model_key_suggests_the_closest() -> None:
    objective = ebmssl.build_objective({"energy": {"name": "cosine"}, "strategies": ["infonce"]})
    with pytest.raises(ConfigError) as info:
        build_learner({"backbone": BACKBONE, "projecter": PROJECTOR}, objective, 2, 3, where="m.yaml: model")
    message = str(info.value)
    assert "m.yaml" in message and "`model.projecter`" in message and "Did you mean `model.projector`" in message


def test_forward_views_is_checked() -> None:
    with pytest.raises(ConfigError, match="forward_views"):
        build({"forward_views": "apart"}, {"energy": {"name": "cosine"}, "strategies": ["infonce"]})


def test_a_learned_critic_of_the_wrong_width_is_explained() -> None:
    critic = {"name": "separable_critic", "dim": 5, "hidden_dim": 8, "output_dim": 4}
    with pytest.raises(ConfigError) as info:
        build({"target": "none"}, {"energy": critic, "strategies": ["nwj"]})
    assert "dim=5" in str(info.value) and "width 8" in str(info.value) and "`dim:`" in str(info.value)
    assert build({"target": "none"}, {"energy": {**critic, "dim": 8}, "strategies": ["nwj"]})
