"""The video experiment's glue (experiments/video_latent.py, video_experiment.py) on tiny untrained world models
(the library's world_model architecture: width-4 CNN, 16 px frames) and tiny clips (16 clips of 6 frames): the
adapter calls the architecture's API, the implausible frames are impossible, the measures and planning run and the
tables, the picture and tools/report.py's video section are written. The numbers of trained models are docs/video.md's."""

from __future__ import annotations

import json

import pytest
import torch

import ebmssl
from ebmssl.config import load_config
from ebmssl.data import build_dataset, build_views
from ebmssl.data.video.dynamics import candidate_next_positions
from ebmssl.models.architectures import build_learner
from experiments.report import render_report
from experiments.video_experiment import markdown, write_outputs
from experiments.video_latent import (
    LearnedWorldModel,
    embed,
    future_coverage,
    implausible_frames,
    measure_model,
    plausible_frames,
    probe,
    write_run_eval,
)  # fmt: skip
from experiments.video_planning import evaluate_planning

TINY = {"name": "moving_fashion", "num_samples": 16, "num_test_samples": 16, "frames": 6, "canvas": 16, "item_size": 6,
        "speed": 2, "num_choices": 4, "item_source": {"name": "synthetic", "channels": 1, "num_samples": 16,
        "num_test_samples": 16, "image_size": 8, "num_classes": 4}}  # fmt: skip
SETTINGS = {"samples": 3, "coverage_contexts": 2, "seed": 0}


def tiny_model(method: str, **latent) -> LearnedWorldModel:
    c = load_config(method, "methods")
    c["model"].update({"backbone": {"name": "small_cnn", "width": 4},
                       "projector": {"name": "mlp", "hidden_dim": 8, "output_dim": 6, "num_layers": 2, "batch_norm": False}})  # fmt: skip
    c["model"]["latent"] = {**c["model"]["latent"], "hidden_dim": 8, **latent}
    c["model"]["embedding"] = "pooled"  # one vector per frame from the tiny CNN (the shipped method embeds a map)
    torch.manual_seed(0)
    return LearnedWorldModel(build_learner(c["model"], ebmssl.build_objective(c), 1, 1, where="model"))


@pytest.fixture(scope="module")
def setup():
    clips = build_dataset(TINY, train=False)
    views = build_views({"name": "clip_views", "image_size": 16, "frames": 4}, clips)
    models = {"latent": tiny_model("world_model_latent"), "deterministic": tiny_model("world_model_deterministic"),
              "action": tiny_model("world_model_action")}  # fmt: skip
    return clips, views, models


def test_the_implausible_frames_are_not_plausible(setup):
    clips = setup[0]
    limit = clips.canvas - clips.items.shape[-1]
    frames = implausible_frames(clips, 3)
    assert set(frames) == {"other_clip", "jump", "diagonal"}
    plausible = plausible_frames(clips, torch.arange(len(clips)), 3)  # (N, K, 1, H, W)
    assert torch.equal(plausible[torch.arange(len(clips)), clips.actions[:, 2]], clips.clips[:, 3])  # the true frame is one of them
    candidates = candidate_next_positions(clips.positions[:, 2], clips.velocities[:, 2], 4, clips.speed, limit)
    assert candidates.shape[1] == 4
    for kind in ("jump", "diagonal"):
        rendered, valid = frames[kind]
        assert valid.any()
        same = (rendered[valid].unsqueeze(1) == plausible[valid]).flatten(2).all(dim=2).any(dim=1)
        assert not same.any(), kind  # never one of the K plausible renders


def test_the_adapter_reads_the_world_model_api(setup):
    clips, views, models = setup
    model = models["latent"]
    encoded = embed(model.encode, views, clips.images)
    assert encoded.shape == (16, 6, 6)
    z, cost = model.infer_latent(encoded[:, :2], encoded[:, 2])
    assert z.shape == (16, model.latent_dim) and cost.shape == (16,) and (cost >= 0).all()
    with torch.no_grad():  # the adapter's energy is the architecture's own amortised transition energy
        ours = model.energy(model.predict(encoded[:, :2], z), encoded[:, 2]) + model.beta * cost
        theirs = model.model.transition_energy(encoded[:, :2], encoded[:, 2])
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_measures_planning_tables_and_report(setup, tmp_path):
    clips, views, models = setup
    results = {}
    for name, model in models.items():
        measured = measure_model(model, views, clips, SETTINGS)
        assert measured["transitions"] == 16 * (6 - 2)
        assert set(measured["energies"]) == {"true", "other_clip", "jump", "diagonal"}
        assert 0.0 <= measured["energies"]["jump"]["auroc"] <= 1.0
        measured["probe"] = probe(model, views, clips, clips, linear_epochs=5)
        if not model.actions:
            measured["coverage"] = future_coverage(model, views, clips, SETTINGS)
            assert 0.0 <= measured["coverage"]["fraction_on_plausible"] <= 1.0
        run_dir = tmp_path / "runs" / name
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text("{}\n")
        measured.update(run_dir=str(run_dir), latent_dim=model.latent_dim, beta=model.beta, actions=model.actions, label=name)
        results[name] = measured
    assert results["deterministic"]["information"]["latent_cost_nats"] == 0.0
    planners = {key: (models[name], embed(models[name].encode, views, clips.images), embed(models[name].target, views, clips.images))
                for key, name in (("action_model", "action"), ("action_free", "deterministic"))}  # fmt: skip
    row = evaluate_planning(clips, planners, 2, 2, 8, {"samples": 8, "elites": 2, "iterations": 2})
    planning = {"rows": [row], "settings": {"samples": 8, "elites": 2, "iterations": 2}}
    files = write_outputs(results, planning, tmp_path)
    assert files == ["summary.md", "futures.png"] and (tmp_path / "futures.png").stat().st_size > 0
    summary = (tmp_path / "summary.md").read_text()
    assert "AUROC jump" in summary and "| 2 | 8 |" in summary
    for name, measured in results.items():
        public = {k: v for k, v in measured.items() if k != "coverage"}
        write_run_eval(tmp_path / "runs" / name, name, public | {"planning": [row]})
    assert json.loads((tmp_path / "runs" / "latent" / "video_eval.json").read_text())["label"] == "latent"
    report = render_report([tmp_path / "runs" / n for n in results], tmp_path / "report").read_text()
    assert "World models on video" in report and "success: action_model" in report
    assert "video_futures.png" in report  # the latent run's own picture
    assert markdown(results, planning).count("\n|") > 5


def test_the_runner_dispatches_video_latent_and_checks_its_settings(tmp_path):
    from ebmssl.registry import ConfigError
    from experiments.runner import run_experiment

    path = tmp_path / "video.yaml"
    path.write_text("experiment: video_latent\nruns:\n  det: {config: runs/world_model_moving_fashion, overrides: [model.latent.latent_dim=0]}\n"
                    "eval: {clips: 8}\n")  # fmt: skip
    data = run_experiment(path, tmp_path / "out", log=lambda _: None, train=False)  # nothing trained: nothing measured
    assert data["not_run"] == ["det"] and (tmp_path / "out" / "summary.md").is_file()
    path.write_text("experiment: video_latent\nruns:\n  det: {config: runs/world_model_moving_fashion}\neval: {clip: 8}\n")
    with pytest.raises(ConfigError, match="clip"):
        run_experiment(path, tmp_path / "out", log=lambda _: None, train=False)
