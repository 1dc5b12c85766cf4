"""The objective API, and every method config under configs/methods/ building and training one step."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import ebmssl
from ebmssl.config import load_config
from ebmssl.energies.tokens import TokenSets
from ebmssl.objective import Objective, ObjectiveOutput
from ebmssl.models.target import EMATarget, build_target
from ebmssl.registry import HEADS, STRATEGIES, TARGETS, ConfigError
from ebmssl.strategies.base import Progress
from ebmssl.models.architectures import build_learner

REPO = Path(__file__).resolve().parents[1]
METHOD_CONFIGS = sorted((REPO / "configs" / "methods").glob("*.yaml"))
METHOD_IDS = [p.stem for p in METHOD_CONFIGS]
TINY_MODEL = {"backbone": {"name": "small_cnn", "width": 8}, "projector": {"name": "mlp", "hidden_dim": 16, "output_dim": 8}}


def build_method(objective: Objective, model: Mapping[str, Any] = TINY_MODEL):
    """The objective's architecture built around it (a tiny CNN): the collapse guard runs here."""
    return build_learner(dict(model), objective, num_global=2, in_channels=3)


def _target_name(model: Mapping[str, Any]) -> str:
    spec = model.get("target") or "none"
    return spec if isinstance(spec, str) else str(spec.get("name"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


SIMCLR_LIKE = """
objective:
  energy: {name: cosine, temperature: 0.5}
  strategies:
    - {name: infonce, negatives: all}
  pair_reduction: sum
"""


# -- the API -------------------------------------------------------------------------------------------
def _check_output(out: ObjectiveOutput) -> None:
    assert isinstance(out, ObjectiveOutput)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert isinstance(out.terms, dict) and out.terms
    total = torch.stack(list(out.terms.values())).sum()
    assert torch.allclose(total, out.loss, rtol=1e-6, atol=1e-6), f"terms {out.terms} do not sum to {out.loss}"


def test_build_from_dict_path_and_name_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "configs" / "methods" / "my_simclr.yaml", SIMCLR_LIKE)
    monkeypatch.setenv("EBMSSL_CONFIG_PATH", str(tmp_path / "configs"))
    from_dict = ebmssl.build_objective(yaml.safe_load(SIMCLR_LIKE))
    from_section = ebmssl.build_objective(yaml.safe_load(SIMCLR_LIKE)["objective"])
    from_path = ebmssl.build_objective(str(path))
    from_pathlib = ebmssl.build_objective(path)
    from_name = ebmssl.build_objective("my_simclr")
    z1, z2 = torch.randn(8, 5), torch.randn(8, 5)
    losses = []
    for objective in (from_dict, from_section, from_path, from_pathlib, from_name):
        assert isinstance(objective, Objective)
        out = objective(online=[z1, z2], target=None)
        _check_output(out)
        assert set(out.terms) == {"energy", "infonce"}
        losses.append(out.loss)
    assert all(torch.equal(losses[0], other) for other in losses[1:])


def test_build_from_a_shipped_method_name() -> None:
    objective = ebmssl.build_objective("simclr")
    _check_output(objective(online=[torch.randn(6, 4), torch.randn(6, 4)], target=None))


def test_loss_carries_gradient_to_every_view() -> None:
    objective = ebmssl.build_objective(yaml.safe_load(SIMCLR_LIKE))
    views = [torch.randn(8, 5, requires_grad=True) for _ in range(3)]
    out = objective(online=views)
    grads = torch.autograd.grad(out.loss, views)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    assert out.batch.has_target is False and out.batch.target is out.batch.online


def test_weights_scale_and_labels_shape_the_terms() -> None:
    config = {
        "energy": {"name": "cosine"},
        "strategies": [{"name": "infonce", "weight": 0.5}, {"name": "infonce", "negatives": "cross", "label": "cross"}],
        "scale": 3.0,
        "energy_weight": 2.0,
    }
    objective = ebmssl.build_objective(config)
    z = [torch.randn(6, 4), torch.randn(6, 4)]
    out = objective(z)
    assert set(out.terms) == {"energy", "infonce", "cross"}
    unit = ebmssl.build_objective({"energy": {"name": "cosine"}, "strategies": ["infonce"]})(z)
    assert torch.allclose(out.terms["energy"], 6.0 * unit.terms["energy"], atol=1e-6)
    assert torch.allclose(out.terms["infonce"], 1.5 * unit.terms["infonce"], atol=1e-6)
    _check_output(out)


def test_collapse_guard_names_the_three_ways_out(tmp_path: Path) -> None:
    path = write(tmp_path / "collapsing.yaml", "objective:\n  energy: {name: cosine}\n  strategies: []\n")
    with pytest.raises(ConfigError) as info:
        build_method(ebmssl.build_objective(path))
    message = str(info.value)
    assert str(path) in message
    for phrase in ("contrastive", "asymmetry", "capacity", "allow_collapse"):
        assert phrase in message, f"collapse-guard message lacks {phrase!r}: {message}"
    assert "\n\n" not in message
    with pytest.raises(ConfigError):
        build_method(ebmssl.build_objective({"energy": {"name": "cosine"}, "strategies": []}))


def test_allow_collapse_builds_the_collapsing_objective() -> None:
    objective = ebmssl.build_objective({"energy": {"name": "cosine"}, "strategies": [], "allow_collapse": True})
    build_method(objective)
    z = torch.randn(4, 3)
    out = objective([z, z.clone()])
    assert set(out.terms) == {"energy"}
    assert torch.allclose(out.loss, torch.tensor(-1.0), atol=1e-6)  # identical views: minimal energy


# -- every shipped method config -------------------------------------------------------------------------
def _last_head(spec: Any) -> Mapping[str, Any] | None:
    if isinstance(spec, list):
        specs = [s for s in spec if s]
        return _last_head(specs[-1]) if specs else None
    if isinstance(spec, str):
        return {"name": spec}
    return spec if isinstance(spec, Mapping) else None


def _input_kind(config: Mapping[str, Any]) -> str:
    """"scores" (prototype cosines in [-1, 1]), "logits" (DINO-style head or a logits strategy) or "embedding"."""
    head = _last_head(config.get("model", {}).get("projector"))
    if head is not None and head.get("name") == "prototypes":
        return "scores"
    strategies = config.get("objective", {}).get("strategies") or []
    kinds = {
        getattr(STRATEGIES.get(s["name"] if isinstance(s, Mapping) else s), "input_kind", "embedding")
        for s in strategies
        if (s["name"] if isinstance(s, Mapping) else s) in STRATEGIES
    }
    if "logits" in kinds or (head is not None and head.get("name") == "dino_head"):
        return "logits"
    return "embedding"


def _sample(kind: str, n: int, d: int, generator: torch.Generator) -> torch.Tensor:
    if kind == "scores":
        return torch.rand(n, d, generator=generator) * 2 - 1
    if kind == "logits":
        return 3.0 * torch.randn(n, d, generator=generator)
    return torch.randn(n, d, generator=generator)


def _batch_size(config: Mapping[str, Any]) -> int:
    """8 rows per view, or a whitening strategy's sub-batch size ``w_size`` (W-MSE needs N > D)."""
    sizes = [s.get("w_size", 0) for s in config.get("objective", {}).get("strategies") or [] if isinstance(s, Mapping)]
    return max([8, *[v for v in sizes if isinstance(v, int)]])


def method_inputs(config: Mapping[str, Any], batch: int | None = None, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """Random (online, target) inputs of the right kind for a method config, as the trainer would pass them.

    Views: 2, or 2 global + 2 local with a multicrop ``views:`` hint. ``model.target``: none -> target None;
    online -> the global views' outputs before the predictor (the same tensors when there is no
    predictor); ema -> separate global-view outputs without gradient (the EMA branch).
    """
    batch = batch or _batch_size(config)
    model = config.get("model") or {}
    views = config.get("views") or {}
    num_global = int(views.get("num_global", 2)) if isinstance(views, Mapping) else 2
    multicrop = isinstance(views, Mapping) and views.get("name") == "multicrop"
    num_views = num_global + (2 if multicrop and views.get("num_local", 1) else 0)
    kind = _input_kind(config)
    pairs = (config.get("objective") or {}).get("pairs")
    named = 1 + max(i for pair in pairs for i in pair) if isinstance(pairs, list) and pairs else 0
    if named > num_views:  # (predictions, targets) handed over as views, as V-JEPA's masks: no target list
        generator = torch.Generator().manual_seed(seed)
        return [_sample(kind, batch, 16, generator).requires_grad_(True) for _ in range(named)], None
    # any width: queues, centers, prototype counts and critics take theirs from the inputs (sizes are said
    # once, on the model's heads), so no width is read from the config here
    target_dim = online_dim = 16
    generator = torch.Generator().manual_seed(seed)
    online = [_sample(kind, batch, online_dim, generator).requires_grad_(True) for _ in range(num_views)]
    mode = _target_name(model)
    if mode == "none":
        return online, None
    if mode == "online" and not model.get("predictor"):
        return online, online[:num_global]
    grad = mode == "online"
    target = [_sample(kind, batch, target_dim, generator).requires_grad_(grad) for _ in range(num_global)]
    return online, target


def method_tokens(objective: Objective, online: list[torch.Tensor], num_global: int, seed: int) -> TokenSets | None:
    """Random token sets for an objective with patch terms (None without): the global views' tokens, each field
    a patch term asks for (``example_tokens``), as a token-feeding architecture passes them."""
    if not len(objective.patch_terms):
        return None
    fields = {field for term in objective.patch_terms for field in type(term).example_tokens}
    for term in objective.patch_terms:  # what the architecture binds: the views' channels (SimMIM's pixels)
        if hasattr(term, "bind_image_channels"):
            term.bind_image_channels(1)
    generator = torch.Generator().manual_seed(1000 + seed)
    n, t, d, e = online[0].shape[0], 6, 16, 5
    r = lambda *shape: torch.randn(*shape, generator=generator)
    views = range(num_global)
    return TokenSets(
        online=[r(n, t, d).requires_grad_(True) for _ in views],
        target=[r(n, t, d) for _ in views],
        masks=[torch.rand(n, t, generator=generator) < 0.5 for _ in views] if "masks" in fields else None,
        online_positions=[r(n, t, 2) for _ in views] if "online_positions" in fields else None,
        online_features=[r(n, t, e).requires_grad_(True) for _ in views] if "online_features" in fields else None,
        target_features=[r(n, t, e) for _ in views] if "target_features" in fields else None,
    )


@pytest.fixture(params=METHOD_CONFIGS, ids=METHOD_IDS)
def method(request: pytest.FixtureRequest) -> Path:
    return request.param


def test_method_config_has_header_and_known_shape(method: Path) -> None:
    text = method.read_text()
    assert text.lstrip().startswith("#"), f"{method.name}: no comment header (paper, official code, conventions)"
    config = load_config(method)
    assert "objective" in config, f"{method.name}: no `objective:` section"
    model = config.get("model")
    if model is not None:
        assert _target_name(model) in TARGETS, f"{method.name}: model.target must be one of {TARGETS.names()}"
        try:
            importlib.import_module("ebmssl.models")
        except ModuleNotFoundError:
            return
        for part in ("projector", "predictor"):
            spec = model.get(part)
            for head in spec if isinstance(spec, list) else [spec]:
                head = _last_head(head)
                if head is not None:
                    assert head.get("name") in HEADS, f"{method.name}: model.{part} names unknown head {head.get('name')!r}"


def test_method_config_builds_and_gives_finite_loss_and_gradient(method: Path) -> None:
    config = load_config(method)
    torch.manual_seed(0)
    objective = ebmssl.build_objective(method)
    assert isinstance(objective, Objective)
    objective.train()
    objective.set_progress(Progress(step=3, total_steps=10, epoch=0.3, total_epochs=1))
    target = build_target((config.get("model") or {}).get("target"))
    mode = _target_name(config.get("model") or {})
    if mode == "ema":
        momentum = target.momentum_at(Progress(step=3, total_steps=10, epoch=0.3, total_epochs=1))
        assert 0.0 <= momentum <= 1.0, f"{method.name}: model.target ema but no valid EMA momentum"
    else:
        assert not isinstance(target, EMATarget), f"{method.name}: an EMA branch with model.target {mode!r}"
    for step in range(2):  # the second step sees the state (queues, centres) the first one left
        online, target = method_inputs(config, seed=step)
        tokens = method_tokens(objective, online, len(target) if target else 2, seed=step)
        out = objective(online=online, target=target, tokens=tokens)
        _check_output(out)
        trained = online + (tokens.online if tokens is not None else [])  # the online views and online tokens
        leaves = trained + [t for t in (target or []) if t.requires_grad and all(t is not o for o in online)]
        grads = torch.autograd.grad(out.loss, leaves, allow_unused=True)
        assert all(g is None or torch.isfinite(g).all() for g in grads), f"{method.name}: non-finite gradient"
        assert any(g is not None and g.abs().sum() > 0 for g in grads[: len(trained)]), f"{method.name}: no gradient reaches the online views"
    bad = [n for n, b in objective.named_buffers() if b.is_floating_point() and not torch.isfinite(b).all()]
    assert not bad, f"{method.name}: non-finite state after two steps: {bad}"


def test_nonfinite_hints_name_the_strategy() -> None:
    """A strategy that reports failures as NaN (no host read in the step) says what to try; the trainer prints it."""
    objective = ebmssl.build_objective("wmse")
    hints = objective.nonfinite_hints()
    assert len(hints) == 1 and hints[0].startswith("wmse_whitening: ") and "w_size" in hints[0]
    assert ebmssl.build_objective("simclr").nonfinite_hints() == []
