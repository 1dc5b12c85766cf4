"""Training experiments at a tiny size: the collapsing run is flagged by the diagnostics, the analysis
files are written, runs are reused, and tools/report.py renders the run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.report import render_report
from experiments.runner import run_experiment

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "experiments"
TINY = [
    "data.num_train=256", "data.batch_size=64", "train.epochs=4", "model.backbone={name: small_cnn, width: 8}",
    "model.projector.hidden_dim=64", "train.progress_bar=false", "train.log_every=2", "eval.monitor_samples=200",
    "eval.num_train=256", "eval.num_test=200", "eval.linear_epochs=5", "eval.labels_per_class=null",
    "eval.baselines=false", "train.optimizer={name: lars, lr: 1.0, weight_decay: 1.0e-6, momentum: 0.9, eta: 0.02}",
]
TINY_PROBES = {"instance_rows": 128, "linear_train": 100, "linear_test": 100, "linear_epochs": 5, "energy_samples": 200}


@pytest.mark.slow
def test_collapse_experiment_flags_the_collapsing_run_and_the_report_renders(tmp_path):
    config = {
        "common": TINY, "probes": TINY_PROBES, "collapsing": ["vicreg_invariance_only"],
        "runs": {
            "simclr": {"config": "runs/simclr_fashion_mnist", "label": "SimCLR"},
            "vicreg_invariance_only": {
                "config": "runs/vicreg_fashion_mnist", "label": "VICReg invariance only",
                "overrides": ["objective.strategies=[]", "objective.allow_collapse=true", "model.projector.output_dim=64"],
            },
        },
    }
    out = tmp_path / "energy_collapse"
    data = run_experiment(CONFIGS / "energy_collapse.yaml", out, overrides=config, log=lambda _: None)
    collapsing = data["analysis"]["vicreg_invariance_only"]
    assert collapsing["flagged_from_step"] is not None, collapsing  # flagged, and it stays flagged to the end
    assert collapsing["final_reasons"], "the final collapse check must flag the collapsing run"
    run_dir = Path(data["runs"]["vicreg_invariance_only"])
    probes = [json.loads(line) for line in (run_dir / "probes.jsonl").read_text().splitlines()]
    assert len(probes) == 4 and all(p["positive_energies"] and p["negative_energies"] for p in probes)
    for name in ("energy_over_training.png", "collapse_curves.png", "summary.md", "results.json"):
        assert (out / name).stat().st_size > 0

    # a second call reuses both finished runs instead of training them again
    logged: list[str] = []
    run_experiment(CONFIGS / "energy_collapse.yaml", out, overrides=config, log=logged.append)
    assert sum("reused" in line for line in logged) == 2

    # train=False analyses what has finished and lists the runs it did not train
    extra = {**config, "runs": {**config["runs"], "byol": {"config": "runs/byol_fashion_mnist"}}}
    partial = run_experiment(CONFIGS / "energy_collapse.yaml", out, overrides=extra, log=lambda _: None, train=False)
    assert partial["not_run"] == ["byol"] and set(partial["runs"]) == {"simclr", "vicreg_invariance_only"}
    assert not (out / "runs" / "byol").exists()

    report = render_report([Path(p) for p in data["runs"].values()], tmp_path / "report")
    text = report.read_text()
    assert "vicreg_invariance_only" in text and "collapse" in text
    assert (tmp_path / "report" / "energy_histograms.png").is_file()


def _tiny_runs(name: str, count: int = 2) -> dict:
    """The experiment's first ``count`` runs, each at a batch the tiny budget allows."""
    from experiments.runner import load_experiment

    runs = dict(list(load_experiment(CONFIGS / f"{name}.yaml")["runs"].items())[:count])
    for spec in runs.values():
        spec["overrides"] = [o for o in spec.get("overrides", []) if not o.startswith("data.batch_size")]
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["batch_size", "fixed_target", "instance_id", "representation"])
def test_each_training_experiment_runs_at_a_tiny_size(name, tmp_path):
    """Experiments 2 to 5 end to end on a tiny budget: every run trains, is analysed and is written up."""
    config = {"common": TINY, "probes": TINY_PROBES, "runs": _tiny_runs(name), "include": [], "reuse": []}
    out = tmp_path / name
    data = run_experiment(CONFIGS / f"{name}.yaml", out, overrides=config, log=lambda _: None)
    assert set(data["runs"]) == set(config["runs"]), data.get("not_run")
    assert data["analysis"], f"{name}: empty analysis"
    for file in ("summary.md", "results.json"):
        assert (out / file).stat().st_size > 0
    text = json.dumps(data["analysis"])
    assert "NaN" not in text or name == "representation", text[:500]  # rank correlations of 2 runs may be undefined
