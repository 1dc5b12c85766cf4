"""No host-device synchronisation in a patch term's step (loss, backward, update), on fake CUDA tensors under the
dispatch recorder of tests/training/host_syncs.py (forward and update on fake CUDA; the backward pass on host
tensors, where the recorder sees data-dependent operations, as tests/training/host_syncs.py does): masks are
weights, not row selections, and the queues' pointers and the Sinkhorn counts stay on the device. Also the
image-level strategies added with them."""

from __future__ import annotations

import copy

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import ebmssl
from ebmssl.energies.tokens import TokenSets
from ebmssl.registry import PATCH_TERMS
from tests.training.host_syncs import SyncRecorder


def _tokens(name: str, device: str) -> TokenSets:
    n, t, d = 4, 6, 8
    fields = PATCH_TERMS.get(name).example_tokens
    r = lambda *s: torch.randn(*s, device=device)  # noqa: E731
    return TokenSets(
        online=[r(n, t, d).requires_grad_() for _ in range(2)],
        target=[r(n, t, d) for _ in range(2)],
        masks=[torch.rand(n, t, device=device) < 0.5 for _ in range(2)] if "masks" in fields else None,
        online_positions=[r(n, t, 2) for _ in range(2)] if "online_positions" in fields else None,
        online_features=([r(n, d).requires_grad_() for _ in range(2)] if name == "koleo_features"
                         else [r(n, t, 5) for _ in range(2)] if "online_features" in fields else None),
        target_features=[r(n, t, 5) for _ in range(2)] if "target_features" in fields else None,
    )


@pytest.mark.parametrize("name", PATCH_TERMS.names() + ["ibot_patch:sinkhorn", "ibot_patch:masked"])
def test_patch_term_step_has_no_host_sync(name: str) -> None:
    name, _, variant = name.partition(":")
    extra = {"sinkhorn": {"centering": "sinkhorn"}, "masked": {"center_tokens": "masked"}}.get(variant, {})
    term = PATCH_TERMS.build({"name": name, **PATCH_TERMS.get(name).example_config, **extra})
    mode, recorder, backward = FakeTensorMode(allow_non_fake_inputs=True), SyncRecorder("cuda"), SyncRecorder("cpu")
    if hasattr(term, "queue"):  # sized once before training (a queue used on its own sizes itself on first use)
        term.queue.ensure(8)
    fake_term = copy.deepcopy(term)
    with mode:
        fake_term.to("cuda")
        tokens = _tokens(name, "cuda")
        with recorder:
            fake_term.loss(tokens)
            fake_term.update(tokens)
    loss = term.loss(_tokens(name, "cpu"))
    with backward:
        loss.backward()
    assert recorder.events == [] and backward.events == [], f"{name}: synchronisations: {recorder.events + backward.events}"


@pytest.mark.parametrize("name", ["power_law_prior", "sinkhorn_teacher"])
def test_new_image_level_strategies_have_no_host_sync(name: str) -> None:
    objective = ebmssl.build_objective(
        {"energy": {"name": "softmax_cross_entropy", "temperature": 0.1}, "strategies": [{"name": name}]}
    ).train()
    mode, recorder, backward = FakeTensorMode(allow_non_fake_inputs=True), SyncRecorder("cuda"), SyncRecorder("cpu")
    fake = copy.deepcopy(objective)
    with mode:
        fake.to("cuda")
        inputs = [torch.randn(8, 6, device="cuda").requires_grad_() for _ in range(2)], [torch.randn(8, 6, device="cuda") for _ in range(2)]
        with recorder:
            fake(*inputs)
    loss = objective([torch.randn(8, 6).requires_grad_() for _ in range(2)], [torch.randn(8, 6) for _ in range(2)]).loss
    with backward:
        loss.backward()
    assert recorder.events == [] and backward.events == [], f"{name}: synchronisations: {recorder.events + backward.events}"
