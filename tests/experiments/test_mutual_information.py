"""The MI experiment: ground truth (closed form, Monte Carlo, invariance to the cubic transform), the
InfoNCE ceiling log N as a property, and a tiny staircase / experiment run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pathlib import Path

from experiments.mutual_information import (
    apply_transform,
    bound_value,
    build_critic,
    critic_scores,
    gaussian_mi,
    log_density_ratio,
    monte_carlo_mi,
    rho_for_mi,
    sample_pairs,
    train_staircase,
    wasserstein_dual,
)


CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "experiments"


@given(mi=st.floats(0.0, 30.0), dim=st.integers(1, 64))
def test_rho_for_mi_inverts_the_closed_form(mi, dim):
    # above ~5 nats per dimension 1 - rho^2 < 5e-5 and rho itself no longer carries the digits
    assume(mi / dim <= 5.0)
    assert gaussian_mi(rho_for_mi(mi, dim), dim) == pytest.approx(mi, rel=1e-6, abs=1e-9)


def test_closed_form_values():
    assert gaussian_mi(0.0, 20) == 0.0
    assert gaussian_mi(0.5, 1) == pytest.approx(-0.5 * math.log(0.75))
    with pytest.raises(ValueError):
        gaussian_mi(1.0, 2)
    with pytest.raises(ValueError):
        rho_for_mi(-1.0, 2)


@settings(max_examples=15)
@given(mi=st.sampled_from([0.0, 0.5, 2.0, 6.0, 10.0]), dim=st.sampled_from([1, 5, 20]),
       transform=st.sampled_from(["identity", "cubic"]), seed=st.integers(0, 1000))
def test_monte_carlo_mi_from_the_densities_matches_the_closed_form(mi, dim, transform, seed):
    """E log p(y|x)/p(y) over samples of the generator is the closed-form MI (within 5 standard errors)."""
    rho = rho_for_mi(mi, dim)
    estimate, stderr = monte_carlo_mi(rho, dim, samples=20000, transform=transform, seed=seed)
    assert abs(estimate - gaussian_mi(rho, dim)) <= 5 * stderr + 1e-6


@given(rho=st.floats(-0.95, 0.95), dim=st.integers(1, 16), seed=st.integers(0, 10_000))
def test_cubic_transform_leaves_the_log_density_ratio_unchanged(rho, dim, seed):
    """Sample by sample, log p(y'|x)/p(y') of y' = y^3 equals log p(y|x)/p(y): the MI is unchanged."""
    generator = torch.Generator().manual_seed(seed)
    x, y = sample_pairs(64, dim, rho, generator)
    plain = log_density_ratio(x, y, rho, "identity")
    cubed = log_density_ratio(x, apply_transform(y, "cubic"), rho, "cubic")
    torch.testing.assert_close(cubed, plain, rtol=1e-5, atol=1e-5)


def test_sample_pairs_has_the_requested_correlation():
    x, y = sample_pairs(200_000, 3, 0.7, torch.Generator().manual_seed(0))
    corr = ((x - x.mean(0)) * (y - y.mean(0))).mean(0) / (x.std(0) * y.std(0))
    torch.testing.assert_close(corr, torch.full((3,), 0.7), atol=0.01, rtol=0)


@settings(max_examples=40)
@given(n=st.integers(2, 64), mi=st.floats(0.0, 20.0), scale=st.floats(0.01, 1000.0), seed=st.integers(0, 10_000),
       bound=st.sampled_from(["infonce", "wpc"]))
def test_infonce_estimate_never_exceeds_log_n(n, mi, scale, seed, bound):
    """Whatever the critic (random, rescaled by up to 1000) and the true MI, InfoNCE <= log N."""
    torch.manual_seed(seed)
    critic = build_critic(bound, 4, hidden_dim=16, output_dim=8, num_layers=1)
    x, y = sample_pairs(n, 4, rho_for_mi(mi, 4), torch.Generator().manual_seed(seed))
    with torch.no_grad():
        scores = scale * critic_scores(critic, x, y).double()
        assert bound_value(bound, scores).item() <= math.log(n) + 1e-9


@given(n=st.integers(2, 32), seed=st.integers(0, 1000))
def test_perfect_critic_reaches_log_n_and_wasserstein_dual_is_a_difference_of_means(n, seed):
    scores = torch.full((n, n), -1e4, dtype=torch.float64)
    scores.fill_diagonal_(0.0)
    assert bound_value("infonce", scores).item() == pytest.approx(math.log(n), abs=1e-9)
    random = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    off = random[~torch.eye(n, dtype=torch.bool)].mean()
    assert wasserstein_dual(random).item() == pytest.approx((random.diagonal().mean() - off).item())


@pytest.mark.slow
@pytest.mark.parametrize("bound", ["infonce", "nwj", "wpc"])
def test_a_tiny_staircase_learns_and_infonce_stays_below_log_n(bound):
    result = train_staircase(bound, 32, [0.0, 4.0, 12.0], dim=4, steps_per_level=60, eval_batches=4, lr=2e-3,
                             critic={"hidden_dim": 32, "output_dim": 8, "num_layers": 1})
    levels = result.levels
    assert [lv["true_mi"] for lv in levels] == [0.0, 4.0, 12.0]
    assert all(lv["finite"] for lv in levels)
    assert abs(levels[0]["estimate"]) < 0.3  # independent pairs: no information
    assert levels[1]["estimate"] > 0.5  # dependence is detected
    if bound != "nwj":
        assert all(t["estimate"] <= math.log(32) + 1e-6 for t in result.trace)
        assert all(lv["estimate"] <= math.log(32) + 1e-6 for lv in levels)


@pytest.mark.slow
def test_mi_experiment_writes_results_and_plots(tmp_path):
    from experiments.runner import run_experiment

    tiny = {
        "dim": 4, "mi_levels": [0, 3], "steps_per_level": 10, "eval_batches": 2, "trace_batch_size": 16,
        "critic": {"hidden_dim": 16, "output_dim": 8, "num_layers": 1},
        "runs": [{"bound": "infonce", "batch_sizes": [16]}, {"bound": "nwj", "batch_sizes": [16]},
                 {"bound": "wpc", "batch_sizes": [16], "transform": "cubic"}],
    }
    data = run_experiment(CONFIGS / "mi_bounds.yaml", tmp_path, overrides=tiny, log=lambda _: None)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["bound"] for r in saved["results"]] == ["infonce", "nwj", "wpc"]
    assert data["results"][0]["levels"][0]["true_mi"] == 0
    for name in ("mi_estimate_vs_truth.png", "mi_traces.png", "mi_std_vs_truth.png", "mi_cubic.png", "summary.md"):
        assert (tmp_path / name).stat().st_size > 0
