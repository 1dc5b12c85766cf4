"""Unit tests of the predictor marker strategy."""

from __future__ import annotations

import torch

from ebmssl.registry import STRATEGIES
from ebmssl.strategies.asymmetry.predictor import Predictor
from ebmssl.strategies.base import ViewBatch


def test_marker_is_a_no_op() -> None:
    strategy = STRATEGIES.build({"name": "predictor"})
    assert isinstance(strategy, Predictor) and strategy.family == "asymmetry"
    z = [torch.randn(3, 2), torch.randn(3, 2)]
    batch = ViewBatch(online=z, target=z, pairs=[(0, 1)])
    assert strategy.transform(batch) is batch
    assert strategy.loss(batch, torch.nn.Identity()) is None
    assert strategy.target_momentum() is None
    assert strategy.state_dict() == {}
