"""Exact resume with model-side randomness: I-JEPA's masks and EMA target, MAE's masks; iBOT's block masks, EMA
teacher and patch centre (DINOv2's architecture); SimMIM's masks; VICRegL's view geometry; DenseCL's dense queue;
V-JEPA's tube masks.

The masks of step s come from the batch generator seeded by (seed, s, micro, process), so a run stopped
mid-epoch and resumed from its checkpoint logs the same losses as the uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.test_resume import assert_resume_matches


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ijepa", "mae", "ibot", "simmim", "vicregl", "densecl", "vjepa"])
def test_resume_matches_uninterrupted_run(method: str, tmp_path: Path) -> None:
    full = assert_resume_matches(method, tmp_path, keys=("loss", "ema_momentum"))
    # the masks do change from step to step (the check above is not vacuous)
    assert len({round(full[s]["loss"], 6) for s in full}) > 1
