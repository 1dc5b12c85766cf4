"""tools/gpu_check.py: the --smoke mode runs the GPU check's whole path on the CPU (configs at the check's
methods and backbones, guarded train steps, FLOP counting, the table and the JSON), and the case list is
the one the check promises."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

import gpu_check  # noqa: E402


def test_the_check_covers_every_method_on_every_backbone_mae_on_the_vit() -> None:
    assert gpu_check.cases(None) == [(m, b) for m in ("simclr", "byol", "dino") for b in ("resnet18", "resnet50", "vit_s_16")] + [
        ("mae", "vit_s_16")
    ]


def test_known_devices_have_a_bf16_peak() -> None:
    assert gpu_check.BF16_PEAK_TFLOPS["H100 SXM"] == 989.0 and gpu_check.BF16_PEAK_TFLOPS["A100"] == 312.0


@pytest.mark.slow
def test_smoke_mode_runs_on_the_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rows.json"
    status = gpu_check.main(["--smoke", "--only", "simclr:resnet50", "--only", "dino:vit_s_16", "--only", "mae:vit_s_16",
                             "--json", str(out)])  # fmt: skip
    assert status == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["method"], r["backbone"]) for r in rows] == [("simclr", "resnet50"), ("dino", "vit_s_16"), ("mae", "vit_s_16")]
    for row in rows:
        assert row["images_per_s"] > 0 and row["tflops"] > 0 and row["skipped_steps"] == 0
        assert row["sync"] == "not checked (CPU)"
    assert rows[1]["views"] == 4  # DINO's multi-crop: 2 global + 2 local in smoke mode
    assert result["equality"]["equal"] == "not checked (one device)"
    assert "| simclr | resnet50 |" in capsys.readouterr().out


def test_only_names_any_method_config_and_refuses_a_wrong_name() -> None:
    assert gpu_check.cases(["moco_v2:resnet50", "ibot:vit_s_16"]) == [("moco_v2", "resnet50"), ("ibot", "vit_s_16")]
    for wrong in ("mocov2:resnet50", "simclr:resnet101", "simclr"):
        with pytest.raises(SystemExit, match="METHOD:BACKBONE"):
            gpu_check.cases([wrong])


def test_a_sync_is_reported_with_the_ebmssl_line_that_made_it() -> None:
    from ebmssl.strategies.base import one_column_per_row

    try:
        one_column_per_row(torch.zeros(2, 2), 3)  # a 2-D index: the comparison cannot broadcast
    except RuntimeError as error:
        where = gpu_check.ebmssl_frame(error)
    assert where.startswith("ebmssl/strategies/base.py:") and where.endswith("(one_column_per_row)"), where
