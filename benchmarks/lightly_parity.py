#!/usr/bin/env python
"""Compare the lightly-parity method configs with lightly's own loss modules (float64, random embeddings).

lightly is not a dependency: point ``--lightly`` at an unpacked ``lightly`` package directory, e.g.::

    pip download "lightly==1.5.26" --no-deps -d /tmp/lightly && cd /tmp/lightly && python -m zipfile -e lightly-*.whl pkg
    python -m benchmarks.lightly_parity --lightly /tmp/lightly/pkg/lightly

Only the loss modules are imported (the package ``__init__`` and its dependencies are skipped). Prints, per
method, the largest absolute difference in loss value and in input gradient over a few shapes, where lightly
uses the same convention as our config or a documented composition (see each configs/methods/*.yaml header).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types

import torch
import torch.nn.functional as F

import ebmssl
from ebmssl.models import build_heads


def _import_lightly_losses(path: str) -> None:
    for name, sub in (("lightly", ""), ("lightly.loss", "/loss"), ("lightly.utils", "/utils")):
        module = types.ModuleType(name)
        module.__path__ = [path.rstrip("/") + sub]
        sys.modules[name] = module


def _gap(record: dict, key: str, ours: torch.Tensor, theirs: torch.Tensor) -> None:
    record[key] = max(record.get(key, 0.0), (ours - theirs).abs().max().item())


def _grads(record: dict, key: str, ours: torch.Tensor, theirs: torch.Tensor, inputs: list[torch.Tensor]) -> None:
    for a, b in zip(torch.autograd.grad(ours, inputs, retain_graph=True), torch.autograd.grad(theirs, inputs)):
        _gap(record, key, a, b)


def compare() -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, dtype=torch.float64, requires_grad=True)  # noqa: E731
    results: dict[str, dict[str, float]] = {}

    record = results.setdefault("tico (lightly adds the constant 1)", {})
    tico = importlib.import_module("lightly.loss.tico_loss").TiCoLoss()
    for n, d in [(8, 4), (32, 16), (16, 64)]:
        config = ebmssl.load_config("tico", "methods")
        config["objective"]["strategies"][0]["dim"] = d
        objective, tico.C = ebmssl.build_objective(config).double().train(), None
        for _ in range(3):  # the running covariance evolves identically
            za, zb = rand(n, d), torch.randn(n, d, dtype=torch.float64)
            ours, theirs = objective([za, za.detach()], [zb, zb]).loss, tico(za, zb)
            _gap(record, "value", ours + 1.0, theirs)
            _grads(record, "gradient", ours, theirs, [za])

    record = results.setdefault("msn", {})
    msn = importlib.import_module("lightly.loss.msn_loss").MSNLoss(temperature=0.1, sinkhorn_iterations=3, regularization_weight=1.0)
    for n, d, k, v in [(8, 4, 6, 2), (16, 16, 32, 3), (12, 8, 10, 11)]:
        config = ebmssl.load_config("msn", "methods")
        config["objective"]["strategies"][0].update(dim=d, num_prototypes=k)
        objective = ebmssl.build_objective(config).double()
        online, target = [rand(n, d) for _ in range(v)], [torch.randn(n, d, dtype=torch.float64) for _ in range(2)]
        prototypes = objective.strategies[0].prototypes
        ours = objective(online, target).loss
        theirs = msn(torch.cat(online[1:]), target[0], prototypes, 0.25)
        _gap(record, "value", ours, theirs)
        _grads(record, "gradient", ours, theirs, online[1:] + [prototypes])

    record = results.setdefault("frossl (lightly's convention by composition)", {})
    frossl = importlib.import_module("lightly.loss.frossl_loss").FroSSLLoss(invariance_weight=2.0)
    for n, d, v in [(8, 4, 2), (6, 12, 3), (32, 16, 4)]:
        z = [rand(n, d) for _ in range(v)]
        objective = ebmssl.build_objective({
            "energy": {"name": "squared_euclidean", "mean_over_dims": True}, "energy_weight": 2.0 * v,
            "strategies": [{"name": "frossl_entropy", "center": False, "weight": float(v)},
                           {"name": "view_mean_target", "normalize": False}],
            "pair_reduction": "sum"}).double()
        ours, theirs = objective(z).loss, frossl(z)
        _gap(record, "value", ours, theirs)
        _grads(record, "gradient", ours, theirs, z)

    record = results.setdefault("directclr (lightly's NT-Xent convention by composition)", {})
    directclr = importlib.import_module("lightly.loss.directclr_loss").DirectCLRLoss(loss_dim=6, temperature=0.5)
    for n, width in [(8, 16), (32, 64)]:
        r = [rand(n, width) for _ in range(2)]
        head = build_heads({"name": "truncate", "dim": 6}, width)
        objective = ebmssl.build_objective({"energy": {"name": "cosine", "temperature": 0.5},
                                            "strategies": [{"name": "infonce", "negatives": "all"}], "pair_reduction": "mean"}).double()
        ours, theirs = objective([head(x) for x in r]).loss, directclr(*r)
        _gap(record, "value", ours, theirs)
        _grads(record, "gradient", ours, theirs, r)

    record = results.setdefault("emp_ssl terms (lightly's EMPSSLLoss adds +TCR: opposite sign)", {})
    emp = importlib.import_module("lightly.loss.emp_ssl_loss")
    for n, d, v in [(8, 4, 3), (16, 32, 5)]:
        z = [F.normalize(torch.randn(n, d, dtype=torch.float64), dim=1).requires_grad_() for _ in range(v)]
        out = ebmssl.build_objective("emp_ssl").double()(z)
        stacked = torch.stack(z)
        _gap(record, "invariance value", out.terms["energy"], 200.0 * emp.invariance_loss(stacked))
        _gap(record, "coding rate value", out.terms["total_coding_rate"], -emp.tcr_loss(stacked, 0.2))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lightly", required=True, help="path of an unpacked `lightly` package directory")
    args = parser.parse_args()
    _import_lightly_losses(args.lightly)
    for method, gaps in compare().items():
        print(f"{method:60s} " + "  ".join(f"{k} {v:.1e}" for k, v in gaps.items()))


if __name__ == "__main__":
    main()
