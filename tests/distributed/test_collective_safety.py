"""Collectives that cannot hang or corrupt: unequal gathers refused with the shapes named, the training loop's
shape ledger (checked once per epoch, host-only after), local-only diagnostics, and batch norm over the
global batch on CPU processes. One ``torchrun --nproc_per_node 2`` launch (gloo), shared with
other files (conftest.py), runs every case."""

from __future__ import annotations

import pytest

from tests.distributed._harness import job_result

SPEC: dict = {}


@pytest.fixture()
def reports(two_process_jobs: dict) -> list[dict]:
    """Both processes' reports, from the shared two-process launch (tests/distributed/conftest.py)."""
    result = job_result(two_process_jobs, "safety")
    assert isinstance(result, list), result
    return result


@pytest.mark.slow
def test_a_gather_of_unequal_rows_is_refused_on_every_process_naming_the_shapes(reports: list[dict]) -> None:
    for report in reports:
        message = report["unequal_rows"]["refused"]
        assert message and "process 0: (3, 4), process 1: (4, 4)" in message and "pure function of the config" in message


@pytest.mark.slow
def test_the_shape_ledger_checks_once_and_refuses_a_later_change_before_any_collective(reports: list[dict]) -> None:
    for report in reports:
        verified, steady, steady_again, changed, again = report["ledger"]["collectives"]
        assert verified == 4  # 2 gathers, each a shape check + the data
        assert steady == steady_again == 2  # the data only: no collective, no host read added
        assert changed.startswith("refused") and "(5, 2)" in changed and "(4, 2)" in changed
        assert again == "verified again"  # a verified step (an epoch start) accepts new equal shapes


@pytest.mark.slow
def test_local_only_makes_every_helper_act_as_one_process(reports: list[dict]) -> None:
    for rank, report in enumerate(reports):
        assert report["local_only"]["inside"] == [3, 1, 0]
        assert report["local_only"]["outside"] == 6


@pytest.mark.slow
def test_global_batchnorm_on_two_processes_equals_batchnorm_on_the_global_batch(reports: list[dict]) -> None:
    for report in reports:
        result = report["global_batchnorm"]
        assert result["kind"] == "GlobalBatchNorm"
        for key in ("output", "input_grad", "param_grad", "running"):
            assert result[key] < 1e-10, (key, result[key])
