"""Read a run directory (config.yaml, metrics.jsonl, diagnostics.jsonl, probes.jsonl, report.json, video_eval.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class RunData:
    """Everything a report needs from one run directory; missing files give empty entries."""

    path: Path
    name: str
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    video: dict[str, Any] = field(default_factory=dict)  # a world model's video measurements (experiments.video_latent)

    @property
    def evaluation(self) -> dict[str, dict[str, float]]:
        return self.report.get("evaluation") or {}

    def accuracy(self, encoder: str = "trained", key: str = "linear_accuracy") -> float:
        return float((self.evaluation.get(encoder) or {}).get(key, float("nan")))

    @property
    def steps_per_epoch(self) -> int:
        data = self.config.get("data") or {}
        num_train, batch = data.get("num_train"), data.get("batch_size")
        if num_train and batch:
            return max(1, int(num_train) // int(batch))
        if len(self.diagnostics) >= 1 and self.diagnostics[0].get("epoch"):
            return max(1, int(self.diagnostics[0]["step"]) // int(self.diagnostics[0]["epoch"]))
        return 1


def load_run(path: str | Path, name: str | None = None) -> RunData:
    """Load the files of a run directory; raises FileNotFoundError when it holds none of them."""
    path = Path(path)
    known = ("config.yaml", "metrics.jsonl", "diagnostics.jsonl", "report.json")
    if not path.is_dir() or not any((path / f).is_file() for f in known):
        raise FileNotFoundError(
            f"{path} is not a run directory (none of {', '.join(known)} found). Pass directories written by "
            f"tools/train.py or tools/experiment.py (e.g. runs/simclr_fashion_mnist)."
        )
    run = RunData(path=path, name=name or path.name)
    if (path / "config.yaml").is_file():
        run.config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    run.metrics = read_jsonl(path / "metrics.jsonl")
    run.diagnostics = read_jsonl(path / "diagnostics.jsonl")
    run.probes = read_jsonl(path / "probes.jsonl")
    if (path / "report.json").is_file():
        run.report = json.loads((path / "report.json").read_text())
    if (path / "final_diagnostics.json").is_file():
        run.final = json.loads((path / "final_diagnostics.json").read_text())
    if (path / "video_eval.json").is_file():
        run.video = json.loads((path / "video_eval.json").read_text())
    return run
