import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.energies.cosine import CosineEnergy
from ebmssl.energies.euclidean import SquaredEuclideanEnergy
from ebmssl.evaluation import (
    alignment,
    collect_diagnostics,
    detect_collapse,
    energy_statistics,
    infonce_bound,
    instance_identification_accuracy,
    normalized_std,
    rankme,
    singular_values,
    uniformity,
)


def _gauss(n, d, seed, dtype=torch.float64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _collapsed(n, d, seed):
    row = _gauss(1, d, seed)
    return row.repeat(n, 1) * torch.linspace(0.5, 2.0, n, dtype=torch.float64)[:, None]


# -- constructed cases -------------------------------------------------------------------------------
def test_collapsed_batch():
    z = _collapsed(64, 32, 0)
    assert float(normalized_std(z)) < 1e-6
    assert float(rankme(z)) == pytest.approx(1.0, abs=1e-3)
    assert float(uniformity(z)) == pytest.approx(0.0, abs=1e-9)
    assert float(instance_identification_accuracy(z, z)) == 0.0  # every row ties with every other
    diagnostics = collect_diagnostics(z, z)
    reasons = detect_collapse(diagnostics, dim=32)
    assert any(r.startswith("complete collapse") for r in reasons)
    assert any(r.startswith("dimensional collapse") for r in reasons)
    assert any(r.startswith("positive and negative energies are indistinguishable") for r in reasons)
    assert "1/sqrt(32)" in " ".join(reasons)


def test_isotropic_gaussian_is_healthy():
    n, d = 512, 32
    z1 = _gauss(n, d, 1)
    z2 = z1 + 0.1 * _gauss(n, d, 2)
    assert float(normalized_std(z1)) == pytest.approx(1 / math.sqrt(d), rel=0.05)
    assert float(rankme(z1)) > 0.85 * d
    diagnostics = collect_diagnostics(z1, z2)
    assert detect_collapse(diagnostics, dim=d) == []
    assert diagnostics["rank_limit"] == d and diagnostics["normalized_std_healthy"] == pytest.approx(1 / math.sqrt(d))
    assert all(isinstance(v, float) for v in diagnostics.values())


def test_dimensional_collapse_only():
    n, d = 256, 64
    z = _gauss(n, 2, 3) @ _gauss(2, d, 4)  # rank-2 embeddings, still spread
    reasons = detect_collapse(collect_diagnostics(z, z + 0.01 * _gauss(n, d, 5)), dim=d)
    assert len(reasons) == 1 and reasons[0].startswith("dimensional collapse: RankMe")


def test_singular_values_and_rankme_formula():
    z = torch.diag(torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(singular_values(z), torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64))
    p = torch.tensor([0.75, 0.25, 0.0], dtype=torch.float64) + 1e-7
    torch.testing.assert_close(rankme(z), torch.exp(-(p * p.log()).sum()))


def test_alignment_and_uniformity_values():
    z = _gauss(20, 5, 6)
    assert float(alignment(z, 3 * z)) == pytest.approx(0.0, abs=1e-12)
    assert float(alignment(z, -z)) == pytest.approx(4.0)  # |a - (-a)|^2 = 4 on the sphere
    assert float(alignment(z, -z, alpha=1)) == pytest.approx(2.0)
    e = torch.eye(4, dtype=torch.float64)  # all pairwise squared distances are 2
    assert float(uniformity(e, t=2)) == pytest.approx(-4.0)


def test_energy_statistics_values():
    a = torch.eye(3, dtype=torch.float64)
    stats = energy_statistics(CosineEnergy(temperature=0.5), a, a)
    assert stats["positive_mean"] == pytest.approx(-2.0)
    assert stats["negative_mean"] == pytest.approx(0.0)
    assert stats["gap"] == pytest.approx(2.0)
    assert stats["positive"].shape == (3,) and stats["negative"].shape == (6,)


def test_identical_views_instance_identification():
    z = _gauss(50, 16, 7)
    assert float(instance_identification_accuracy(z, z)) == 1.0
    assert float(instance_identification_accuracy(z, z.flip(0))) < 0.2


def test_infonce_bound_reaches_log_n_for_separated_pairs():
    n = 16
    z = torch.eye(n, dtype=torch.float64)
    bound, log_n = infonce_bound(CosineEnergy(temperature=0.01), z, z)
    assert log_n == pytest.approx(math.log(n))
    assert float(bound) <= log_n
    assert float(bound) == pytest.approx(log_n, abs=1e-6)
    collapsed, _ = infonce_bound(CosineEnergy(temperature=0.01), _collapsed(n, 8, 0), _collapsed(n, 8, 0))
    assert float(collapsed) == pytest.approx(0.0, abs=1e-9)


def test_collect_diagnostics_uses_given_energy_and_falls_back():
    z1, z2 = _gauss(8, 4, 8), _gauss(8, 4, 9)
    euclid = collect_diagnostics(z1, z2, SquaredEuclideanEnergy())
    expected = energy_statistics(SquaredEuclideanEnergy(), z1, z2)
    assert euclid["energy_positive"] == pytest.approx(expected["positive_mean"])

    class Broken(torch.nn.Module):
        def pairwise(self, a, b):
            raise NotImplementedError

    fallback = collect_diagnostics(z1, z2, Broken())
    assert fallback == collect_diagnostics(z1, z2, None)
    assert fallback["energy_positive"] == pytest.approx(
        energy_statistics(CosineEnergy(temperature=0.1), z1, z2)["positive_mean"]
    )


def test_detect_collapse_healthy_and_nonfinite():
    assert detect_collapse({}, dim=8) == []
    reasons = detect_collapse({"normalized_std": float("nan")}, dim=8)
    assert reasons == ["non-finite diagnostic: normalized_std = nan"]


def test_diverged_embeddings_give_nan_diagnostics_not_an_svd_error():
    z = torch.randn(16, 8)
    z[3, 2] = float("inf")
    diagnostics = collect_diagnostics(z, torch.full((16, 8), float("nan")), CosineEnergy())
    assert math.isnan(diagnostics["rankme"])
    assert "non-finite diagnostic: rankme = nan" in detect_collapse(diagnostics, dim=8)


# -- hypothesis properties --------------------------------------------------------------------------
shapes = st.tuples(st.integers(2, 24), st.integers(1, 24))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), rank=st.integers(1, 24), scale=st.floats(1e-3, 1e3))
def test_rankme_in_range(shape, seed, rank, scale):
    n, d = shape
    z = scale * (_gauss(n, min(rank, d), seed) @ _gauss(min(rank, d), d, seed + 1))
    value = float(rankme(z))
    assert 1.0 - 1e-4 <= value <= min(n, d) * (1 + 1e-4)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), log_scales=st.lists(st.floats(-3, 3), min_size=24, max_size=24))
def test_normalized_std_invariant_to_row_rescaling(shape, seed, log_scales):
    n, d = shape
    z = _gauss(n, d, seed)
    scales = torch.tensor(log_scales[:n], dtype=torch.float64).exp()[:, None]
    torch.testing.assert_close(normalized_std(z * scales), normalized_std(z), rtol=1e-9, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), noise=st.floats(0.0, 3.0))
def test_instance_id_invariant_to_joint_permutation(shape, seed, noise):
    n, d = shape
    z1 = _gauss(n, d, seed)
    z2 = z1 + noise * _gauss(n, d, seed + 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    acc = float(instance_identification_accuracy(z1, z2))
    assert 0.0 <= acc <= 1.0
    assert float(instance_identification_accuracy(z1[perm], z2[perm])) == acc


@settings(max_examples=50, deadline=None)
@given(
    shape=shapes,
    seed=st.integers(0, 10_000),
    temperature=st.floats(1e-3, 10.0),
    scale=st.floats(1e-6, 1e6),
    duplicate=st.booleans(),
    euclidean=st.booleans(),
)
def test_infonce_bound_never_exceeds_log_n(shape, seed, temperature, scale, duplicate, euclidean):
    n, d = shape
    a = scale * _gauss(n, d, seed)
    b = a.clone() if duplicate else scale * _gauss(n, d, seed + 1)
    a[0] = 0.0  # a zero vector must not break the bound
    energy = SquaredEuclideanEnergy() if euclidean else CosineEnergy(temperature=temperature)
    bound, log_n = infonce_bound(energy, a, b)
    assert math.isfinite(float(bound))
    assert float(bound) <= log_n
