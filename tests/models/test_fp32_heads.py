"""Heads whose outputs a small temperature divides next compute in float32 under autocast: DINO's last
layer (teacher temperature 0.04), SwAV's prototypes (0.1) and MSN's prototype scores."""

from __future__ import annotations

import torch

from ebmssl.models.heads.dino_head import DINOHead
from ebmssl.models.heads.prototypes import PrototypesHead
from ebmssl.strategies.asymmetry.msn_prototypes import prototype_scores


def test_temperature_heads_return_float32_equal_to_the_float32_computation_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 32)
    dino = DINOHead(32, output_dim=64, hidden_dim=48, bottleneck_dim=24)
    swav = PrototypesHead(32, num_prototypes=40).eval()  # eval: no in-place re-normalisation between the calls
    prototypes = torch.randn(40, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bottleneck = dino.mlp(x)  # the MLP stays in bf16, as the backbone
        outputs = {"dino": dino(x), "swav": swav(x), "msn": prototype_scores(x.bfloat16(), prototypes)}
    assert bottleneck.dtype == torch.bfloat16
    assert all(out.dtype == torch.float32 for out in outputs.values()), {k: v.dtype for k, v in outputs.items()}
    expected_dino = dino.last_layer(torch.nn.functional.normalize(bottleneck.float(), dim=-1))
    torch.testing.assert_close(outputs["dino"], expected_dino, rtol=0, atol=0)
    torch.testing.assert_close(outputs["swav"], swav(x), rtol=0, atol=0)  # equal to the fp32 run outright
    expected_msn = torch.nn.functional.normalize(x.bfloat16().float(), dim=1) @ torch.nn.functional.normalize(prototypes, dim=1).T
    torch.testing.assert_close(outputs["msn"], expected_msn, rtol=0, atol=0)
