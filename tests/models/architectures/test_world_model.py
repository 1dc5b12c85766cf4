"""The world model (ebmssl/models/architectures/world_model.py): its loss against the formula written out
(value and gradient, float64), the collapse guard's cases (representation and latent collapse), the public
API the measurements call, and bad configs. Tiny: width-4 CNN on 8 px frames, 3-4 frames, batch 6."""

from __future__ import annotations

import copy

import pytest
import torch

import ebmssl
from ebmssl.config import load_config
from ebmssl.models.architectures import build_learner
from ebmssl.registry import ConfigError

N, T, SIZE = 6, 4, 8


def config(method: str = "world_model_latent", **model) -> dict:
    c = load_config(method, "methods")
    c["model"].update({"backbone": {"name": "small_cnn", "width": 4}, "embedding": "pooled",
                       "projector": {"name": "mlp", "hidden_dim": 8, "output_dim": 6, "num_layers": 2, "batch_norm": False}})  # fmt: skip
    c["model"]["latent"] = {**c["model"]["latent"], "hidden_dim": 8}
    for key, value in model.items():
        old = c["model"].get(key)
        c["model"][key] = {**old, **value} if isinstance(value, dict) and isinstance(old, dict) else value
    return c


def build(c: dict, allow_collapse: bool = False):
    if allow_collapse:
        c = {**c, "objective": {**c["objective"], "allow_collapse": True}}
    return build_learner(c["model"], ebmssl.build_objective(c), 1, 1, where=f"{c['_source']}: model")


def clips_and_actions(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, T, 1, SIZE, SIZE, generator=g, dtype=torch.float64), torch.randint(0, 4, (N, T - 1), generator=g)


def reference_loss(model, clips: torch.Tensor, actions: torch.Tensor | None, eps: torch.Tensor) -> torch.Tensor:
    """The loss from the formula, with the model's networks: E = mean_rows mean_dims (pred - s_{t+1})^2 (targets
    with gradient: `shared`), VICReg variance hinge and covariance on (pred, target) averaged over the two, weights
    1 : 1 : 0.04, plus beta * mean_rows KL(N(mu, sigma^2) || N(0, I)) with z = mu + sigma eps."""
    c, beta = model.context_frames, model.predictor.beta
    n, t = clips.shape[:2]
    if model.tokens:  # the map: every place of every frame projected by the same head, places in grid order
        places = model.encoder.backbone.tokens(clips.flatten(0, 1))[1]
        s = torch.cat([model.online.projector(places[:, l]) for l in range(places.shape[1])], dim=1).view(n, t, -1)
    else:
        frames = model.encoder.backbone(clips.flatten(0, 1)).view(n, t, -1)  # every frame in one batch (batch norm)
        s = torch.stack([model.online.projector(frames[:, k]) for k in range(t)], dim=1)
    rows_h, rows_y = [], []
    for i in range(n):
        for step in range(c - 1, t - 1):  # transition step -> step + 1
            parts = [s[i, step - c + 1 + k] for k in range(c)]
            if actions is not None:
                parts.append(model.context_net.actions.weight[actions[i, step]])
            rows_h.append(model.context_net.mix(torch.cat(parts)))
            rows_y.append(s[i, step + 1])
    h, y = torch.stack(rows_h), torch.stack(rows_y)
    if model.latent_dim:
        stats = model.predictor.inference(torch.cat([h, y.detach()], dim=1))
        mu, log_var = stats[:, : model.latent_dim], stats[:, model.latent_dim :].clamp(-20, 10)
        z = mu + torch.exp(0.5 * log_var) * eps
        kl = 0.5 * (mu**2 + log_var.exp() - log_var - 1).sum(1)
        pred = model.predictor.decoder(torch.cat([h, z], dim=1))
    else:
        kl, pred = torch.zeros(h.shape[0], dtype=h.dtype), model.predictor.decoder(h)
    energy = ((pred - y) ** 2).mean(1).mean()

    def variance(v):
        return torch.relu(1 - torch.sqrt(v.var(0) + 1e-4)).mean()

    def covariance(v):
        centred = v - v.mean(0)
        cov = centred.T @ centred / (v.shape[0] - 1)
        return (cov - torch.diag(torch.diag(cov))).pow(2).sum() / v.shape[1]

    return energy + (variance(pred) + variance(y)) / 2 + 0.04 * (covariance(pred) + covariance(y)) / 2 + beta * kl.mean()


MAP = {"embedding": "tokens", "image_size": SIZE, "backbone": {"name": "conv_map", "width": 4, "output_dim": 3, "stride": 2}}


@pytest.mark.parametrize("method, changes", [("world_model_latent", {}), ("world_model_deterministic", {}), ("world_model_action", {}),
                                             ("world_model_latent", MAP)], ids=["latent", "deterministic", "action", "latent_map"])
def test_loss_and_gradient_equal_the_formula_in_float64(method: str, changes: dict) -> None:
    torch.manual_seed(0)
    model = build(config(method, **changes)).double()
    clips, actions = clips_and_actions()
    views = [clips, actions] if model.conditioned_on_actions else [clips]
    out = model(views, torch.Generator().manual_seed(5))
    grads = torch.autograd.grad(out.loss, list(model.parameters()), allow_unused=True)
    rows = N * (T - model.context_frames)
    eps = torch.randn(rows, model.latent_dim, generator=torch.Generator().manual_seed(5)).double()  # drawn in float32
    expected = reference_loss(model, clips, actions if model.conditioned_on_actions else None, eps)
    expected_grads = torch.autograd.grad(expected, list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(out.loss, expected, rtol=1e-9, atol=1e-12)
    for got, want in zip(grads, expected_grads):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-10)
    assert set(out.objective.terms) == {"energy", "vicreg_variance", "vicreg_covariance", "latent"}


def test_a_momentum_target_gets_no_gradient_and_follows_the_online_branch() -> None:
    model = build(config(target_encoder={"momentum": 0.5, "final_momentum": 0.5, "schedule": "constant"}))
    clips, _ = clips_and_actions()
    out = model([clips.float()], torch.Generator().manual_seed(0))
    out.loss.backward()
    assert all(p.grad is None for p in model.target.parameters())
    before = [p.clone() for p in model.target.parameters()]
    with torch.no_grad():
        for p in model.online.parameters():
            p.add_(1.0)
    model.after_optimizer_step(ebmssl.strategies.base.Progress(step=1, total_steps=4))
    moved = [(a - b).abs().max() for a, b in zip(before, model.target.parameters())]
    assert all(m > 0.4 for m in moved)
    assert [f for f, _ in model.collapse_mechanisms()] == ["asymmetry", "latent_capacity"]


def test_an_action_changes_the_prediction_and_missing_actions_are_an_error() -> None:
    model = build(config("world_model_action"))
    s = torch.randn(N, 2, 6)
    assert not torch.allclose(model.predict(s, torch.zeros(N, dtype=torch.long)), model.predict(s, torch.ones(N, dtype=torch.long)))
    clips, _ = clips_and_actions()
    with pytest.raises(ValueError, match="actions: true"):
        model([clips.float()], torch.Generator())
    with pytest.raises(ValueError, match="no transition"):
        model([clips[:, :2].float(), torch.zeros(N, 1, dtype=torch.long)], torch.Generator())


def test_the_public_api_shapes_and_energies() -> None:
    torch.manual_seed(0)
    model = build(config()).eval()
    clips, _ = clips_and_actions()
    s = model.encode(clips.float())
    assert s.shape == (N, T, 6) and model.encoder(clips.float()).shape == (N, 8)  # time-pooled features
    window, target = s[:, :2].detach(), s[:, 2].detach()
    z = model.infer_latent(window, target)
    assert z.shape == (N, 4)
    prediction = model.predict(window, z=z)
    assert prediction.shape == (N, 6)
    torch.testing.assert_close(model.predict(window), model.predict(window, z=torch.zeros(N, 4)))
    energy = model.energy(prediction, target)
    torch.testing.assert_close(energy, ((prediction - target) ** 2).mean(1))
    amortised = model.transition_energy(window, target)
    kl = model.predictor.regulariser.penalty(model.predictor.inference(torch.cat([model.context(window), target], 1)))
    torch.testing.assert_close(amortised, energy + model.predictor.beta * kl)
    refined = model.transition_energy(window, target, refine_steps=20)
    assert refined.shape == (N,) and bool((refined <= model.transition_energy(window, target, refine_steps=1, refine_lr=0.0) + 1e-6).all())
    draws = model.sample_latent(4000, torch.Generator().manual_seed(0))
    assert draws.shape == (4000, 4) and abs(float(draws.mean())) < 0.05 and abs(float(draws.std()) - 1) < 0.05
    sampled = model.infer_latent(window, target, generator=torch.Generator().manual_seed(1), sample=True)
    assert not torch.allclose(sampled, z)


# -- the collapse guard ----------------------------------------------------------------------------------
LATENT_REFUSED = {
    "kl_at_beta_0": {"beta": 0.0},
    "l1_at_beta_0": {"beta": 0.0, "regulariser": {"name": "l1_sparsity"}},
}
BUILDS = {
    "kl_at_beta_positive": ({"latent": {"beta": 0.1}}, ["latent_capacity"]),
    "noisy_bottleneck_at_beta_0": ({"latent": {"beta": 0.0, "regulariser": {"name": "noisy_bottleneck", "noise_std": 0.5}}}, ["latent_capacity"]),
    "no_latent": ({"latent": {"latent_dim": 0, "beta": 0.0}}, []),
}


@pytest.mark.parametrize("case", sorted(LATENT_REFUSED))
def test_an_unlimited_latent_is_refused_unless_collapse_is_allowed(case: str) -> None:
    c = config(latent=LATENT_REFUSED[case])
    with pytest.raises(ConfigError) as error:
        build(c)
    message = str(error.value)
    for phrase in ("world_model_latent.yaml", "no capacity limit", "latent collapse", "model.latent.beta", "noisy_bottleneck",
                   "objective.allow_collapse: true"):  # fmt: skip
        assert phrase in message, (phrase, message)
    assert build(c, allow_collapse=True).unlimited_latent() is not None


@pytest.mark.parametrize("case", sorted(BUILDS))
def test_a_limited_or_absent_latent_builds(case: str) -> None:
    changes, families = BUILDS[case]
    model = build(config(**changes))
    assert model.unlimited_latent() is None
    assert [f for f, _ in model.collapse_mechanisms()] == families


def test_representation_collapse_is_still_refused_and_the_image_latent_model_too() -> None:
    c = config()
    c["objective"] = {**c["objective"], "strategies": []}
    with pytest.raises(ConfigError, match="nothing prevents collapse"):
        build(c)  # shared targets, no variance term: the capacity limit on z does not stop representation collapse
    image = load_config("latent_jepa", "methods")
    image["model"].update({"backbone": {"name": "small_cnn", "width": 4}, "latent": {**image["model"]["latent"], "beta": 0.0}})
    with pytest.raises(ConfigError, match="latent collapse"):
        build_learner(image["model"], ebmssl.build_objective(image), 2, 3, where="latent_jepa.yaml: model")


@pytest.mark.parametrize("key, value, message", [
    ("context_frames", 0, "model.context_frames"),
    ("actions", {"num_actions": -1}, "model.actions.num_actions"),
    ("actions", {"num_action": 4}, "model.actions.num_action"),
    ("target_encoder", "online", "model.target_encoder"),
])  # fmt: skip
def test_bad_model_keys_are_config_errors(key: str, value, message: str) -> None:
    c = config()
    c["model"] = copy.deepcopy(c["model"])
    c["model"][key] = value
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        build(c)


# -- the map embedding (embedding: tokens) ----------------------------------------------------------------
def test_conv_map_tokens_are_local_places_and_pool_to_the_mean() -> None:
    from ebmssl.models import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone({"name": "conv_map", "width": 4, "output_dim": 3, "stride": 4, "in_channels": 1})
    images = torch.randn(2, 1, 16, 16)
    cls, tokens = backbone.tokens(images)
    assert cls is None and tokens.shape == (2, 16, 3) and backbone.grid(16, 16) == (4, 4)
    torch.testing.assert_close(backbone(images), tokens.mean(1))
    changed = images.clone()
    changed[:, :, 12:, 12:] += 1.0  # the bottom-right corner: far from the top-left place's receptive field
    moved = backbone.tokens(changed)[1]
    torch.testing.assert_close(moved[:, 0], tokens[:, 0])
    assert not torch.allclose(moved[:, -1], tokens[:, -1])


def test_the_map_embedding_is_every_place_projected_by_the_same_head() -> None:
    torch.manual_seed(0)
    c = config(embedding="tokens", image_size=SIZE, backbone={"name": "conv_map", "width": 4, "output_dim": 5, "stride": 2})
    model = build(c)
    clips, _ = clips_and_actions()
    s = model.encode(clips.float())
    places = model.encoder.backbone.tokens(clips.float().flatten(0, 1))[1]  # (N T, 16, 5)
    expected = torch.stack([model.online.projector(places[:, l]) for l in range(places.shape[1])], dim=1).flatten(1)
    torch.testing.assert_close(s, expected.view(N, T, -1))
    assert s.shape == (N, T, 16 * 6)
    out = model([clips.float()], torch.Generator().manual_seed(0))
    out.loss.backward()
    with pytest.raises(ValueError, match="model.image_size"):
        model([torch.randn(N, T, 1, 2 * SIZE, 2 * SIZE)], torch.Generator())
    with pytest.raises(ConfigError, match="token encoder"):
        build(config(embedding="tokens", image_size=SIZE))  # small_cnn pools: no places


@pytest.mark.slow
def test_the_final_evaluation_runs_the_random_init_baseline_on_clips(tmp_path) -> None:
    """The random-init baseline is the raw backbone wrapped like the trained encoder (frame by frame on clips)."""
    from ebmssl.training.run import run_training
    from tests.training.test_methods_end_to_end import tiny_run_config

    c = tiny_run_config("world_model_deterministic")
    c["eval"].update({"final": True, "baselines": True})
    evaluation = run_training(c, tmp_path / "run")["evaluation"]
    assert set(evaluation) == {"trained", "random_init", "raw_pixels"}
    assert all(0.0 <= result["knn_accuracy"] <= 1.0 for result in evaluation.values())
    # the export (tools/export.py) reads back the frame backbone the run saved, at the frames' channel count
    from ebmssl.hub.export import load_run_backbone

    frame_backbone, _ = load_run_backbone(tmp_path / "run")
    assert frame_backbone.in_channels == 1 and frame_backbone(torch.rand(2, 1, 32, 32)).shape == (2, frame_backbone.output_dim)
