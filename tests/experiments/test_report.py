"""tools/report.py renders a Markdown report with PNG plots from run directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from experiments.report import render_report

ROOT = Path(__file__).resolve().parents[2]


def make_run_dir(path: Path, collapsed: bool = False) -> Path:
    """A run directory with the files the trainer writes (config, metrics, diagnostics, report, final)."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"_source": "configs/runs/simclr_fashion_mnist.yaml",
                                                      "data": {"num_train": 64, "batch_size": 16}}))
    metrics = [{"step": s, "epoch": s / 4, "loss": 5.0 - 0.1 * s} for s in range(4, 17, 4)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    diagnostics = [
        {"step": 4 * e, "epoch": e, "knn_monitor": 0.5 + 0.01 * e, "diag/rankme": 1.0 if collapsed else 10.0 + e,
         "diag/normalized_std": 0.001 if collapsed else 0.08, "collapse": ["complete collapse: x"] if collapsed else []}
        for e in range(1, 5)
    ]
    (path / "diagnostics.jsonl").write_text("".join(json.dumps(d) + "\n" for d in diagnostics))
    report = {
        "config": "configs/runs/simclr_fashion_mnist.yaml", "training": {"steps": 16, "seconds": 3.5},
        "evaluation": {"trained": {"knn_accuracy": 0.61, "linear_accuracy": 0.7}},
        "diagnostics": {"normalized_std": 0.08, "rankme": 11.0, "rank_limit": 32.0, "infonce_bound": 1.2, "infonce_log_n": 4.1},
        "collapse": ["complete collapse: x"] if collapsed else [],
    }
    (path / "report.json").write_text(json.dumps(report))
    final = {"singular_values": [4.0, 2.0, 1.0, 0.5], "positive_energies": [0.1, 0.2, 0.15], "negative_energies": [0.8, 0.9, 1.0, 0.7]}
    (path / "final_diagnostics.json").write_text(json.dumps(final))
    return path


def test_report_renders_tables_and_plots(tmp_path):
    healthy = make_run_dir(tmp_path / "healthy")
    collapsed = make_run_dir(tmp_path / "collapsed", collapsed=True)
    path = render_report([healthy, collapsed], tmp_path / "out", title="two runs")
    text = path.read_text()
    assert text.startswith("# two runs")
    assert "| healthy | simclr_fashion_mnist.yaml | 16 | 3.5 | trained | 61 | 70 | – |" in text
    assert "complete collapse: x" in text and "| collapsed | 1 (4) |" in text and "| healthy | never | – |" in text
    for image in ("curves.png", "spectra.png", "energy_histograms.png"):
        assert f"]({image})" in text
        assert (tmp_path / "out" / image).read_bytes()[:4] == b"\x89PNG"
    for line in text.splitlines():  # every table row has as many cells as its header
        if line.startswith("|"):
            assert line.count("|") >= 3


@pytest.mark.slow  # an interpreter start-up
def test_report_cli_renders_and_rejects_a_non_run_directory(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run")
    ok = subprocess.run([sys.executable, str(ROOT / "tools" / "report.py"), str(run), "--output", str(tmp_path / "r")],
                        capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "r" / "report.md").is_file()
    (tmp_path / "empty").mkdir()
    from tests.training.test_reliability import command_line

    # the refusal in this process (the script's own process ran above): its exit code and message
    assert command_line("report")([str(tmp_path / "empty")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
