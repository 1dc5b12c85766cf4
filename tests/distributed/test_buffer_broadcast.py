"""DDP broadcasts only batch-norm statistics from process 0: the learner's other buffers (SwAV's per-process
queue; MoCo's queue, DINO's centre, equal on every process by construction) are on DDP's ignore list.
(The two-process behaviour, queues per process or equal to one process, is in test_every_method_two_process.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from torch.nn.modules.batchnorm import _NormBase

from ebmssl.training.trainer import Trainer
from tests.training.test_reliability import tiny


@pytest.mark.parametrize("method, state", [("swav", "queue"), ("moco_v2", "queue"), ("dino", "center")])
def test_only_batchnorm_statistics_are_broadcast(method: str, state: str, tmp_path: Path) -> None:
    learner = Trainer(tiny(method, "train.max_steps=1"), tmp_path).learner
    ignored = set(learner._ddp_params_and_buffers_to_ignore)
    norms = {name for name, module in learner.named_modules() if isinstance(module, _NormBase)}
    statistics = {name for name, _ in learner.named_buffers() if name.rsplit(".", 1)[0] in norms}
    assert statistics and not statistics & ignored  # batch-norm statistics: broadcast as before
    assert any(name.endswith(f".{state}") for name in ignored), sorted(ignored)
    assert ignored == {name for name, _ in learner.named_buffers()} - statistics
    assert not ignored & {name for name, _ in learner.named_parameters()}  # parameters keep their all-reduce
