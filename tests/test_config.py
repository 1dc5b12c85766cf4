"""YAML configs: explained errors (file, key, fix), base: inheritance, imports: of user modules, overrides.

Every bad config is written to a file under tmp_path so that the error message must name that file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import ebmssl
from ebmssl.config import apply_overrides, deep_merge, load_config
from ebmssl.registry import ENERGIES, STRATEGIES, ConfigError

USER_DIR = Path(__file__).resolve().parent / "user_components"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def config_error(path_or_spec, *, build: bool = True) -> str:
    """The ConfigError message of building (or just loading) a config; asserts it is one paragraph."""
    with pytest.raises(ConfigError) as info:
        ebmssl.build_objective(path_or_spec) if build else load_config(path_or_spec)
    message = str(info.value)
    assert "\n\n" not in message.strip(), f"not one paragraph:\n{message}"
    assert "Traceback" not in message
    return message


def assert_names(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} missing from the error message: {message}"


# -- one bad config per mistake: the message names the FILE, the KEY and the FIX -----------------------
BAD_CONFIGS = {
    # case: (yaml text, [phrases: file is added automatically])
    "unknown_energy_name": (
        "objective:\n  energy: {name: cosin}\n  strategies: [infonce]\n",
        ["objective.energy", "'cosin'", "cosine", "name:", "imports:"],
    ),
    "unknown_strategy_name": (
        "objective:\n  energy: {name: cosine}\n  strategies:\n    - {name: infonse}\n",
        ["strategies[0]", "'infonse'", "infonce", "name:"],
    ),
    "argument_typo": (
        "objective:\n  energy: {name: cosine, temprature: 0.5}\n  strategies: [infonce]\n",
        ["objective.energy", "'temprature'", "Did you mean 'temperature'"],
    ),
    "strategy_argument_typo": (
        "objective:\n  energy: {name: cosine}\n  strategies:\n    - {name: infonce, negative: all}\n",
        ["strategies[0]", "'negative'", "'negatives'"],
    ),
    "wrong_type": (
        "objective:\n  energy: {name: cosine, temperature: hot}\n  strategies: [infonce]\n",
        ["objective.energy", "objective.energy.temperature`", "expects float", "'hot'", "Fix the value of `temperature:`"],
    ),
    "value_outside_literal": (
        "objective:\n  energy: {name: cosine}\n  strategies:\n    - {name: infonce, negatives: some}\n",
        ["strategies[0]", "strategies[0].negatives`", "'cross' | 'all'", "'some'"],
    ),
    "wrong_weight_type": (
        "objective:\n  energy: {name: cosine}\n  strategies:\n    - {name: infonce, weight: heavy}\n",
        ["strategies[0].weight", "'heavy'", "weight: 1.0"],
    ),
    "unknown_objective_key": (
        "objective:\n  energy: {name: cosine}\n  strategies: [infonce]\n  pair_reduce: sum\n",
        ["objective", "`objective.pair_reduce`", "pair_reduction"],
    ),
    "bad_objective_value": (
        "objective:\n  energy: {name: cosine}\n  strategies: [infonce]\n  pair_reduction: average\n",
        ["objective.pair_reduction`", "'average'", "'mean' | 'sum'"],
    ),
    "missing_energy": (
        "objective:\n  strategies: [infonce]\n",
        ["energy:", "cosine"],
    ),
    "strategy_not_a_mapping": (
        "objective:\n  energy: {name: cosine}\n  strategies:\n    - [infonce]\n",
        ["strategies[0]", "name:"],
    ),
    "missing_base": (
        "base: ../methods/simclrr.yaml\nobjective:\n  energy: {name: cosine}\n  strategies: [infonce]\n",
        ["base: ../methods/simclrr.yaml", "Pass an existing YAML path"],
    ),
    "invalid_yaml": (
        "objective:\n  energy: {name: cosine, temperature: 0.5\n  strategies: [infonce]\n",
        ["not valid YAML", "line 2", "Fix the syntax"],
    ),
    "not_a_mapping": (
        "- energy: cosine\n",
        ["top level must be a mapping", "key: value"],
    ),
    "missing_import": (
        "imports: [no_such_user_module_h6]\nobjective:\n  energy: {name: cosine}\n  strategies: [infonce]\n",
        ["imports:", "'no_such_user_module_h6'", "Check the module name", "PYTHONPATH"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_error_names_file_key_and_fix(case: str, tmp_path: Path) -> None:
    text, phrases = BAD_CONFIGS[case]
    path = write(tmp_path / f"{case}.yaml", text)
    message = config_error(path)
    assert_names(message, str(path), *phrases)


def test_unknown_name_lists_the_closest_registered_names(tmp_path: Path) -> None:
    path = write(tmp_path / "close.yaml", "objective:\n  energy: {name: squared_euclidian}\n  strategies: [infonce]\n")
    message = config_error(path)
    assert_names(message, str(path), "squared_euclidean", "tools/components.py")


def test_top_level_typo_of_objective_suggests_objective(tmp_path: Path) -> None:
    path = write(tmp_path / "typo.yaml", "objectve:\n  energy: {name: cosine}\n  strategies: [infonce]\n")
    message = config_error(path)
    assert_names(message, str(path), "'objectve'", "objective:")


def test_missing_required_argument(tmp_path: Path, forget_user_components: None) -> None:
    """`user_scaled_cosine` (a user module, imported by the config) requires `scale`."""
    write(tmp_path / "my_energy.py", (USER_DIR / "my_energy.py").read_text())
    path = write(tmp_path / "missing.yaml", "imports: [my_energy]\nobjective:\n  energy: {name: user_scaled_cosine}\n  strategies: [infonce]\n")
    message = config_error(path)
    assert_names(message, str(path), "objective.energy", "'scale'", "missing the required", "scale: float")


def test_base_loop_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "base: b.yaml\nobjective: {energy: {name: cosine}}\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    message = config_error(tmp_path / "a.yaml", build=False)
    assert_names(message, "a.yaml", "b.yaml", "base:", "loops")


def test_unknown_config_name_suggests_shipped_ones() -> None:
    message = config_error("simclrr")
    assert_names(message, "'simclrr'", "EBMSSL_CONFIG_PATH")


# -- dotted overrides ---------------------------------------------------------------------------------------
def _simclr_file(tmp_path: Path) -> Path:
    return write(
        tmp_path / "simclr_like.yaml",
        "objective:\n  energy: {name: cosine, temperature: 0.5}\n  strategies:\n    - {name: infonce, negatives: all}\n"
        "  pair_reduction: sum\nmodel:\n  projector: {name: mlp, output_dim: 16}\n  target: none\n",
    )


def test_dotted_overrides_apply(tmp_path: Path) -> None:
    config = load_config(_simclr_file(tmp_path))
    changed = apply_overrides(
        config,
        [
            "objective.energy.temperature=0.2",
            "objective.strategies.0.negatives=cross",
            "objective.strategies.0.weight=2",
            "model.projector={name: identity}",
            "model.target=ema",
        ],
    )
    assert config["objective"]["energy"]["temperature"] == 0.5, "overrides must not mutate their input"
    assert changed["objective"]["energy"] == {"name": "cosine", "temperature": 0.2}
    assert changed["objective"]["strategies"][0] == {"name": "infonce", "negatives": "cross", "weight": 2}
    assert changed["model"]["projector"] == {"name": "identity"}
    assert changed["model"]["target"] == "ema"
    objective = ebmssl.build_objective(changed)
    assert objective.energy.temperature == 0.2 and objective.weights == [2.0]
    assert objective.strategies[0].negatives == "cross"


def test_override_may_add_a_leaf_under_an_existing_section(tmp_path: Path) -> None:
    config = apply_overrides(load_config(_simclr_file(tmp_path)), ["objective.scale=2.0"])
    assert config["objective"]["scale"] == 2.0


BAD_OVERRIDES = {
    "objectiv.energy.temperature=0.2": ["'objectiv'", "Did you mean objective"],
    "objective.energy.temperature": ["key.path=value"],
    "objective..temperature=1": ["empty key part"],
}


@pytest.mark.parametrize("override", sorted(BAD_OVERRIDES))
def test_bad_override_names_the_key_and_the_fix(override: str, tmp_path: Path) -> None:
    config = load_config(_simclr_file(tmp_path))
    with pytest.raises(ConfigError) as info:
        apply_overrides(config, [override])
    assert_names(str(info.value), override, *BAD_OVERRIDES[override])


def test_bad_override_names_the_config_file(tmp_path: Path) -> None:
    path = _simclr_file(tmp_path)
    with pytest.raises(ConfigError) as info:
        apply_overrides(load_config(path), ["objectiv.energy.temperature=0.2"])
    message = str(info.value)
    assert_names(message, str(path), "'objectiv'", "objective")
    assert "_source" not in message, f"internal key `_source` offered as a fix: {message}"


def test_overridden_typo_is_caught_when_building(tmp_path: Path) -> None:
    path = _simclr_file(tmp_path)
    config = apply_overrides(load_config(path), ["objective.energy.temprature=0.2"])
    message = config_error(config)
    assert_names(message, str(path), "'temprature'", "'temperature'")


# -- base: inheritance ------------------------------------------------------------------------------------
def test_base_inheritance_deep_merges(tmp_path: Path) -> None:
    write(
        tmp_path / "parent.yaml",
        "objective:\n  energy: {name: cosine, temperature: 0.5}\n  strategies:\n    - {name: infonce, negatives: all}\n"
        "  pair_reduction: sum\nmodel:\n  projector: {name: mlp, hidden_dim: 64, output_dim: 16}\n  target: none\n",
    )
    write(tmp_path / "mixin.yaml", "train: {epochs: 3, optimizer: {name: sgd, lr: 0.1}}\n")
    child = write(
        tmp_path / "sub" / "child.yaml",
        "base: [../parent.yaml, ../mixin.yaml]\nobjective:\n  energy: {temperature: 0.2}\n"
        "model:\n  projector: {output_dim: 32}\ntrain: {optimizer: {lr: 0.5}}\n",
    )
    config = load_config(child)
    assert config["objective"]["energy"] == {"name": "cosine", "temperature": 0.2}
    assert config["objective"]["pair_reduction"] == "sum"
    assert config["objective"]["strategies"] == [{"name": "infonce", "negatives": "all"}]
    assert config["model"]["projector"] == {"name": "mlp", "hidden_dim": 64, "output_dim": 32}
    assert config["train"] == {"epochs": 3, "optimizer": {"name": "sgd", "lr": 0.5}}
    assert config["_source"] == str(child)
    objective = ebmssl.build_objective(child)
    assert objective.energy.temperature == 0.2 and objective.pair_reduction == "sum"


def test_lists_are_replaced_not_merged_and_defaults_is_a_synonym(tmp_path: Path) -> None:
    write(tmp_path / "parent.yaml", "objective:\n  energy: {name: cosine}\n  strategies: [infonce, infonce]\n")
    child = write(tmp_path / "child.yaml", "defaults: parent.yaml\nobjective:\n  strategies: [{name: infonce, negatives: cross}]\n")
    config = load_config(child)
    assert config["objective"]["strategies"] == [{"name": "infonce", "negatives": "cross"}]
    assert "defaults" not in config and "base" not in config


def test_base_by_name_under_the_config_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "roots" / "methods" / "parent_h6.yaml", "objective:\n  energy: {name: cosine, temperature: 0.3}\n  strategies: [infonce]\n")
    monkeypatch.setenv("EBMSSL_CONFIG_PATH", str(tmp_path / "roots"))
    child = write(tmp_path / "elsewhere" / "child.yaml", "base: methods/parent_h6\nobjective:\n  scale: 2.0\n")
    objective = ebmssl.build_objective(child)
    assert objective.energy.temperature == 0.3 and objective.scale == 2.0


def test_deep_merge_does_not_mutate_its_inputs() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}}
    override = {"a": {"b": 2}}
    merged = deep_merge(base, override)
    assert merged == {"a": {"b": 2, "c": [1, 2]}} and base == {"a": {"b": 1, "c": [1, 2]}}
    merged["a"]["c"].append(3)
    assert base["a"]["c"] == [1, 2]


# -- a user's own components, from a module outside the package ------------------------------------------
@pytest.fixture
def forget_user_components():
    """Unregister the user components and unload their module for one test, then restore everything, so the
    test proves that `imports:` registers them (whatever was imported before) and leaves no trace."""
    energies, strategies = dict(ENERGIES._entries), dict(STRATEGIES._entries)
    module, path = sys.modules.pop("my_energy", None), list(sys.path)
    ENERGIES._entries.pop("user_scaled_cosine", None)
    STRATEGIES._entries.pop("user_spread", None)
    yield
    ENERGIES._entries.clear(), ENERGIES._entries.update(energies)
    STRATEGIES._entries.clear(), STRATEGIES._entries.update(strategies)
    sys.modules.pop("my_energy", None)
    if module is not None:
        sys.modules["my_energy"] = module
    sys.path[:] = path


def test_user_component_needs_imports(tmp_path: Path, forget_user_components: None) -> None:
    path = write(tmp_path / "no_imports.yaml", "objective:\n  energy: {name: user_scaled_cosine, scale: 2.0}\n  strategies: [user_spread]\n")
    message = config_error(path)
    assert_names(message, str(path), "'user_scaled_cosine'", "imports:")


def test_user_components_build_through_imports(forget_user_components: None) -> None:
    path = USER_DIR / "user_method.yaml"
    objective = ebmssl.build_objective(path)  # imports: [my_energy], found next to the YAML
    assert "my_energy" in sys.modules
    assert type(objective.energy).__name__ == "UserScaledCosine" and objective.energy.scale == 2.0
    assert [type(s).__name__ for s in objective.strategies] == ["UserSpread", "InfoNCE"]
    assert objective.term_names == ["user_spread", "infonce"]
    views = [torch.randn(16, 8, requires_grad=True) for _ in range(2)]
    out = objective(views)
    assert set(out.terms) == {"energy", "user_spread", "infonce"}
    assert torch.isfinite(out.loss)
    grads = torch.autograd.grad(out.loss, views)
    assert all(torch.isfinite(g).all() for g in grads)


def test_user_module_imported_from_a_copy_next_to_a_tmp_config(tmp_path: Path, forget_user_components: None) -> None:
    write(tmp_path / "my_energy.py", (USER_DIR / "my_energy.py").read_text())
    path = write(
        tmp_path / "method.yaml",
        "imports: [my_energy]\nobjective:\n  energy: {name: user_scaled_cosine, scale: 1.5}\n  strategies:\n    - {name: user_spread, weight: 0.1}\n",
    )
    objective = ebmssl.build_objective(path)
    assert objective.weights == [0.1] and objective.energy.scale == 1.5
    assert Path(sys.modules["my_energy"].__file__).parent == tmp_path


def test_method_headers_say_how_batch_norm_runs_on_several_processes() -> None:
    """Every method with batch norm in a head says in its header what it does on several processes, and the
    header agrees with its ``train.sync_batchnorm`` (true: global-batch statistics as the official code)."""
    from ebmssl.config import load_config

    for path in sorted((Path(__file__).resolve().parents[1] / "configs" / "methods").glob("*.yaml")):
        text = path.read_text()
        if "batch_norm: true" not in text:
            continue
        header = [line for line in text.splitlines() if line.startswith("# Several processes:")]
        assert len(header) == 1, f"{path.name}: no '# Several processes:' header line about batch norm"
        synced = bool((load_config(str(path), "methods").get("train") or {}).get("sync_batchnorm", False))
        import re

        claim = re.search(r"sync_batchnorm: (true|false)", header[0])  # the first mention is the claim
        assert claim is not None and (claim.group(1) == "true") == synced, f"{path.name}: header and train.sync_batchnorm disagree"


def test_a_component_named_anew_replaces_the_old_one_instead_of_merging() -> None:
    """A budget's AdamW over a method's SGD gets no `momentum` (AdamW takes none); the same name still merges."""
    method = {"train": {"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}}, "model": {"backbone": {"name": "vit", "patch_size": 4}}}
    budget = {"train": {"optimizer": {"name": "adamw", "lr": 0.001}}, "model": {"backbone": {"name": "vit", "image_size": 28}}}
    merged = deep_merge(method, budget)
    assert merged["train"]["optimizer"] == {"name": "adamw", "lr": 0.001}
    assert merged["model"]["backbone"] == {"name": "vit", "patch_size": 4, "image_size": 28}
    assert deep_merge({"o": {"name": "sgd", "momentum": 0.9}}, {"o": {"lr": 0.5}})["o"] == {"name": "sgd", "momentum": 0.9, "lr": 0.5}
