"""Rank correlation, collapse timing and run-config resolution of the training experiments."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiments.analysis import first_flagged_step, flagged_from_step, knn_shows_step, rank, spearman
from experiments.grid import resolve_runs
from experiments.rundata import RunData
from experiments.runner import load_experiment
from ebmssl.registry import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "experiments"
finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(st.lists(finite, min_size=3, max_size=30, unique=True))
def test_spearman_is_one_under_a_monotone_map_and_minus_one_under_a_reversal(xs):
    assert spearman(xs, [x**3 + 2 * x for x in xs]) == pytest.approx(1.0)
    assert spearman(xs, [-x for x in xs]) == pytest.approx(-1.0)


@given(st.lists(st.integers(0, 5), min_size=1, max_size=20))
def test_ranks_average_ties_and_sum_to_the_triangle_number(values):
    ranks = rank(values)
    n = len(values)
    assert sum(ranks) == pytest.approx(n * (n + 1) / 2)
    for i in range(n):
        for j in range(n):
            if values[i] == values[j]:
                assert ranks[i] == ranks[j]
            elif values[i] < values[j]:
                assert ranks[i] < ranks[j]


def test_spearman_matches_a_known_value_and_is_nan_when_undefined():
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233)
    assert spearman([1, 2], [3, 4]) != spearman([1, 2], [3, 4])  # nan: fewer than three pairs
    assert spearman([1, 1, 1], [1, 2, 3]) != spearman([1, 1, 1], [1, 2, 3])  # nan: constant ranks


def _run(diagnostics):
    return RunData(path=Path("."), name="r", diagnostics=diagnostics)


def test_collapse_timing_against_the_reference_knn():
    reference = _run([{"step": s, "knn_monitor": 0.7} for s in (8, 16, 24, 32)])
    run = _run([
        {"step": 8, "knn_monitor": 0.69, "collapse": ["dimensional collapse"]},
        {"step": 16, "knn_monitor": 0.68, "collapse": []},
        {"step": 24, "knn_monitor": 0.67, "collapse": ["complete collapse"]},
        {"step": 32, "knn_monitor": 0.6, "collapse": ["complete collapse"]},
    ])
    assert first_flagged_step(run) == (8, ["dimensional collapse"])
    assert flagged_from_step(run) == 24  # the transient flag at step 8 does not count as persistent
    assert knn_shows_step(run, [reference], drop=0.05) == 32
    assert knn_shows_step(run, [reference], drop=0.2) is None
    slow_healthy = _run([{"step": s, "knn_monitor": k} for s, k in ((8, 0.6), (16, 0.64), (24, 0.7), (32, 0.7))])
    # below every healthy run from step 32 on; a dip below only some of them does not count
    assert knn_shows_step(run, [reference, slow_healthy], drop=0.05) == 32
    recovering = _run([{"step": 8, "knn_monitor": 0.5}, {"step": 16, "knn_monitor": 0.7}])
    assert knn_shows_step(recovering, [reference], drop=0.05) is None  # a transient dip is not "shown"


def test_every_experiment_config_resolves():
    for path in sorted(CONFIGS.glob("*.yaml")):
        config = load_experiment(path)
        if config["experiment"] == "training":
            runs = resolve_runs(config)
            assert runs, path


def test_bad_experiment_configs_are_explained(tmp_path):
    bad_kind = tmp_path / "bad.yaml"
    bad_kind.write_text("experiment: trainig\n")
    with pytest.raises(ConfigError, match="experiment:"):
        load_experiment(bad_kind)
    with pytest.raises(ConfigError, match="needs `runs:`"):
        resolve_runs({"experiment": "training", "_source": "x.yaml"})
    with pytest.raises(ConfigError, match="unknown keys"):
        resolve_runs({"experiment": "training", "_source": "x.yaml", "runs": {"a": {"config": "runs/simclr_fashion_mnist", "overides": []}}})
    with pytest.raises(ConfigError, match="needs `config:`"):
        resolve_runs({"experiment": "training", "_source": "x.yaml", "runs": {"a": {"overrides": []}}})
