import torch

from ebmssl.evaluation import plot_curves, plot_energy_histograms, plot_spectrum

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    return path.exists() and path.stat().st_size > 100 and path.read_bytes()[:8] == PNG_MAGIC


def test_plot_curves(tmp_path):
    records = [{"step": s, "loss": 1.0 / (s + 1), "knn_accuracy": s / 10} for s in range(10)]
    records.append({"step": 10, "loss": float("nan")})  # skipped, no crash
    path = plot_curves(records, tmp_path / "sub" / "curves.png", keys=["loss", "knn_accuracy"])
    assert _is_png(path)
    assert _is_png(plot_curves([{"epoch": 0, "loss": torch.tensor(1.0)}], tmp_path / "one.png", keys=["loss"]))


def test_plot_spectrum_with_zeros(tmp_path):
    values = torch.tensor([5.0, 2.0, 0.1, 0.0])
    assert _is_png(plot_spectrum(values, tmp_path / "spectrum.png"))
    assert _is_png(plot_spectrum([0.0, 0.0], tmp_path / "flat.png"))


def test_plot_energy_histograms(tmp_path):
    positive, negative = torch.randn(50) - 2, torch.randn(200)
    assert _is_png(plot_energy_histograms(positive, negative, tmp_path / "energy.png"))
    assert _is_png(plot_energy_histograms([1.0], [1.0, 1.0], tmp_path / "constant.png"))
