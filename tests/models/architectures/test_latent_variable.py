"""The capacity-limited latent predictor, its energy, and the latent_variable architecture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import ebmssl
from ebmssl.config import load_config
from ebmssl.energies.euclidean import SquaredEuclideanEnergy
from ebmssl.models.architectures.latent_variable import LatentVariablePredictor
from ebmssl.registry import ConfigError
from ebmssl.strategies.capacity.latent import GaussianKL
from ebmssl.models.architectures import build_learner

ROOT = Path(__file__).resolve().parents[3]


def test_deterministic_predictor_has_no_latent_and_no_capacity() -> None:
    model = LatentVariablePredictor(4, 0, GaussianKL(), beta=1.0, hidden_dim=8)
    out = model(torch.randn(3, 4), torch.randn(3, 4))
    assert out.latent.shape == (3, 0) and torch.equal(out.penalty, torch.zeros(3))
    assert model.collapse_mechanisms() == []
    assert [f for f, _ in LatentVariablePredictor(4, 2, GaussianKL(), beta=0.1).collapse_mechanisms()] == ["latent_capacity"]
    assert LatentVariablePredictor(4, 2, GaussianKL(), beta=0.0).collapse_mechanisms() == []


def test_refined_energy_is_lower_and_leaves_parameters_alone() -> None:
    torch.manual_seed(0)
    model = LatentVariablePredictor(4, 2, GaussianKL(), beta=0.1, hidden_dim=16)
    x, y = torch.randn(32, 4), torch.randn(32, 4)
    before = [p.clone() for p in model.parameters()]
    distance = SquaredEuclideanEnergy()
    amortised_point = model.energy(x, y, distance, refine_steps=1, refine_lr=0.0)  # the start of the descent
    refined = model.energy(x, y, distance, refine_steps=50)
    assert refined.shape == (32,) and bool((refined <= amortised_point + 1e-6).all())
    assert all(torch.equal(a, b) and b.grad is None for a, b in zip(before, model.parameters()))


def test_latent_variable_architecture_trains_and_reports_its_mechanisms() -> None:
    config = load_config("latent_jepa", "methods")
    config["model"]["backbone"] = {"name": "small_cnn", "width": 4}
    config["model"]["projector"] = {"name": "mlp", "hidden_dim": 16, "output_dim": 8}
    model = build_learner(config["model"], ebmssl.build_objective(config), 2, 3, where="latent_jepa.yaml: model")
    families = [f for f, _ in model.collapse_mechanisms()]
    assert families == ["asymmetry", "latent_capacity"]
    views = [torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)]
    out = model(views, torch.Generator().manual_seed(0))
    assert set(out.objective.terms) == {"energy", "latent"}
    torch.testing.assert_close(out.objective.loss, out.objective.terms["energy"] + out.objective.terms["latent"])
    out.loss.backward()
    assert all(p.grad is None for p in model.target.parameters())
    assert "ema_momentum" in model.after_optimizer_step(ebmssl.strategies.base.Progress(step=1, total_steps=4))
    with pytest.raises(ConfigError, match="unknown key `model.latent.betta`"):
        bad = {**config["model"], "latent": {**config["model"]["latent"], "betta": 1.0}}
        build_learner(bad, ebmssl.build_objective(config), 2, 3, where="latent_jepa.yaml: model")


@pytest.mark.slow
def test_latent_demo_shows_the_three_regimes(tmp_path: Path) -> None:
    """Short run of tools/latent_demo.py: the deterministic predictor separates plausible from implausible
    targets worst; the unlimited latent gives implausible targets lower energy than the limited one."""
    from tools.latent_demo import main

    config = yaml.safe_load((ROOT / "configs/methods/latent_jepa.yaml").read_text())
    config["_demo"].update({"betas": [0.0, 0.1], "steps": 300, "refine_steps": 50})
    config.pop("imports", None)
    path = tmp_path / "latent.yaml"
    path.write_text(yaml.safe_dump(config))
    summary = main(["--config", str(path), "--output", str(tmp_path / "latent")])
    models = summary["models"]
    deterministic = models["deterministic predictor (no latent)"]
    limited = models["capacity-limited latent (beta 0.1)"]
    unlimited = models["unlimited latent (beta 0)"]
    assert deterministic["auroc"] < limited["auroc"] - 0.1
    assert deterministic["energy_plausible_median"] > 5 * limited["energy_plausible_median"]
    assert unlimited["energy_implausible_median"] < limited["energy_implausible_median"]
    assert (tmp_path / "latent.png").stat().st_size > 0
    assert json.loads((tmp_path / "latent.json").read_text())["models"]
