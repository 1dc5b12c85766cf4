"""Patch terms under torch.compile: new masks (other positions, other counts per image) and new token values
reuse the first graph; the masks are weights, so their content never reaches a guard. (State is sized before
the first step, as the builder does: iBOT's centre by ``dim``, DenseCL's queue by ``ensure``.)"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from ebmssl.energies.tokens import TokenSets
from ebmssl.registry import PATCH_TERMS
from tests.energies.test_patch_terms_host_syncs import _tokens


@pytest.mark.parametrize("name", ["ibot_patch", "ibot_patch:sinkhorn", "masked_pixels", "densecl_dense", "vicregl_local", "koleo_features"])
def test_patch_term_compiles_once(name: str) -> None:
    name, _, variant = name.partition(":")
    extra = {"centering": "sinkhorn"} if variant else {"dim": 8} if name == "ibot_patch" else {}
    term = PATCH_TERMS.build({"name": name, **PATCH_TERMS.get(name).example_config, **extra}).train()
    if hasattr(term, "queue"):
        term.queue.ensure(8)
    torch._dynamo.reset()
    backend = CompileCounterWithBackend("aot_eager")
    step = torch.compile(lambda tokens: term.loss(tokens), backend=backend)
    losses = []
    for seed in range(3):
        torch.manual_seed(seed)
        tokens = _tokens(name, "cpu")
        losses.append(step(tokens))
        term.update(tokens)
    assert backend.frame_count == 1, f"{name}: {backend.frame_count} graphs for 3 steps"
    assert all(torch.isfinite(v) for v in losses)
