"""The registries: mechanics, explained build errors, conventions every registered component follows, and
``tools/components.py``. Component checks are parametrised over the registries, so new components are
covered as soon as they register."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import ebmssl
from ebmssl.strategies.base import FAMILIES as COLLAPSE_FAMILIES
from ebmssl.registry import ENERGIES, REGISTRIES, STRATEGIES, ConfigError, Registry, first_doc_line

try:  # tests/ is a package (tests/__init__.py) or a rootdir on sys.path
    from .properties._support import ENERGY_PROPERTIES, STRATEGY_PROPERTIES, build_energy, build_strategy
except ImportError:
    from properties._support import ENERGY_PROPERTIES, STRATEGY_PROPERTIES, build_energy, build_strategy

REPO = Path(__file__).resolve().parents[1]
for _package in ("ebmssl.models", "ebmssl.data", "ebmssl.training"):
    try:
        importlib.import_module(_package)
    except ModuleNotFoundError as error:
        if error.name != _package:
            raise

ALL_COMPONENTS = [(registry, name) for registry, reg in REGISTRIES.items() for name in reg.names()]
INPUT_KINDS = ("embedding", "logits")


# -- mechanics --------------------------------------------------------------------------------------------
def _toy_registry() -> Registry:
    registry = Registry("widget")

    @registry.register("box")
    class Box:
        """A box."""

        def __init__(self, size: int, label: str = "x", ratio: float = 1.0, tags: list[str] | None = None) -> None:
            self.size, self.label, self.ratio, self.tags = size, label, ratio, tags

    @registry.register()
    def make_ball(radius: float = 1.0) -> dict:
        """A ball."""
        return {"radius": radius}

    return registry


def test_register_build_and_lookup() -> None:
    registry = _toy_registry()
    assert registry.names() == ["box", "make_ball"] and "box" in registry and len(registry) == 2
    box = registry.build({"name": "box", "size": 3, "tags": ["a"]})
    assert (box.size, box.label, box.tags) == (3, "x", ["a"])
    assert registry.build("make_ball") == {"radius": 1.0}
    assert registry.build({"name": "box", "ratio": 2}, size=4).ratio == 2  # int accepted for float
    assert registry.get("box").registered_name == "box"


def test_duplicate_registration_is_refused_but_reimport_is_fine() -> None:
    registry = _toy_registry()
    with pytest.raises(ValueError, match="already registered"):

        @registry.register("box")
        class OtherBox:  # noqa: F841
            pass

    box = registry.get("box")
    registry.register("box")(box)  # the same object again (a module imported twice)


BUILD_ERRORS = {
    "unknown name": ({"name": "bx"}, ["unknown widget 'bx'", "box", "imports:"]),
    "name not a string": ({"name": 3}, ["must be a string"]),
    "no name": ({"size": 3}, ["no `name:` key", "box, make_ball"]),
    "not a mapping": (["box"], ["must be a mapping"]),
    "argument typo": ({"name": "box", "size": 1, "lable": "y"}, ["'lable'", "Did you mean 'label'"]),
    "missing argument": ({"name": "box"}, ["missing the required argument(s) 'size'"]),
    "wrong type": ({"name": "box", "size": "big"}, ["size` (widget 'box' argument) expects int", "'big'", "Fix the value of `size:`"]),
    "bool is not int": ({"name": "box", "size": True}, ["size` (widget 'box' argument) expects int"]),
    "list item type": ({"name": "box", "size": 1, "tags": [1]}, ["tags` (widget 'box' argument) expects"]),
}


@pytest.mark.parametrize("case", sorted(BUILD_ERRORS))
def test_build_errors_name_where_key_and_fix(case: str) -> None:
    spec, phrases = BUILD_ERRORS[case]
    with pytest.raises(ConfigError) as info:
        _toy_registry().build(spec, where="conf.yaml: thing")
    message = str(info.value)
    assert message.startswith("conf.yaml: thing: "), message
    assert "\n" not in message, f"not one paragraph: {message}"
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} missing: {message}"


def test_constructor_errors_become_config_errors() -> None:
    with pytest.raises(ConfigError) as info:
        ENERGIES.build({"name": "cosine", "temperature": -1.0}, where="m.yaml: objective.energy")
    assert "m.yaml: objective.energy" in str(info.value) and "temperature" in str(info.value)


# -- conventions of every registered component -------------------------------------------------------------
@pytest.mark.parametrize("registry,name", ALL_COMPONENTS, ids=[f"{r}:{n}" for r, n in ALL_COMPONENTS])
def test_component_has_docstring_and_typed_arguments(registry: str, name: str) -> None:
    component = REGISTRIES[registry].get(name)
    assert first_doc_line(component) != "(no docstring)", f"{registry} {name!r} has no docstring (tools/components.py shows its first line)"
    target = component.__init__ if inspect.isclass(component) else component
    hints = typing.get_type_hints(target)
    untyped = [
        p.name
        for p in inspect.signature(target).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in hints
    ]
    assert not untyped, f"{registry} {name!r}: arguments without type hints (the registry checks YAML types from them): {untyped}"


@pytest.mark.parametrize("name", ENERGIES.names())
def test_energy_conventions(name: str) -> None:
    cls = ENERGIES.get(name)
    assert inspect.isclass(cls) and issubclass(cls, ebmssl.Energy), f"energy {name!r} must subclass Energy"
    assert type(build_energy(name)).pairwise is not ebmssl.Energy.pairwise, f"energy {name!r} does not implement pairwise"
    _check_exemptions(cls, ENERGY_PROPERTIES, f"energy {name!r}")
    for flag in ("scale_invariant", "minimal_on_identical"):
        assert isinstance(getattr(build_energy(name), flag, False), bool), f"energy {name!r}: `{flag}` must be a bool"


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_strategy_conventions(name: str) -> None:
    cls = STRATEGIES.get(name)
    assert inspect.isclass(cls) and issubclass(cls, ebmssl.Strategy), f"strategy {name!r} must subclass Strategy"
    assert getattr(cls, "family", None) in COLLAPSE_FAMILIES, f"strategy {name!r}: family must be one of {COLLAPSE_FAMILIES}"
    assert cls.input_kind in INPUT_KINDS, f"strategy {name!r}: input_kind {cls.input_kind!r} not in {INPUT_KINDS}"
    assert isinstance(cls.example_config, dict)
    build_strategy(name)
    _check_exemptions(cls, STRATEGY_PROPERTIES, f"strategy {name!r}")


def _check_exemptions(cls: type, known: frozenset[str], what: str) -> None:
    exempt = getattr(cls, "exempt_properties", {}) or {}
    assert isinstance(exempt, dict), f"{what}: exempt_properties must be a dict property -> reason"
    for prop, reason in exempt.items():
        assert prop in known, f"{what}: exempt_properties names unknown property {prop!r}; known: {sorted(known)}"
        assert isinstance(reason, str) and reason.strip(), f"{what}: exempt_properties[{prop!r}] needs a reason"


def test_builtin_components_are_registered() -> None:
    assert {"cosine", "squared_euclidean", "euclidean_power"} <= set(ENERGIES.names())
    assert "infonce" in STRATEGIES


# -- tools/components.py -----------------------------------------------------------------------------------
def _components(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "components.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )


def test_components_tool_lists_every_registry() -> None:
    result = _components()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for registry in REGISTRIES:
        assert f"\n{registry} (" in "\n" + out, f"registry {registry!r} missing from the listing"
    for registry, name in ALL_COMPONENTS:
        if not REGISTRIES[registry].get(name).__module__.startswith("ebmssl."):
            continue  # a user component registered in this process (tests/user_components), not in the tool's
        assert f"  {name} " in out, f"{registry} {name!r} missing from the listing"
    assert "cosine" in out and "Negative cosine similarity" in out
    assert "[contrastive]" in out  # infonce's family


def test_components_tool_filters_by_registry_and_imports_user_modules() -> None:
    result = _components("--registry", "strategies", "--imports", "my_energy", cwd=REPO / "tests" / "user_components")
    assert result.returncode == 0, result.stderr
    assert "infonce" in result.stdout and "user_spread" in result.stdout and "[capacity]" in result.stdout
    assert "cosine " not in result.stdout and "energies (" not in result.stdout


def test_components_tool_rejects_an_unknown_registry(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.training.test_reliability import command_line

    with pytest.raises(SystemExit) as exit_:  # in this process: the tool runs as a process in the tests above
        command_line("components")(["--registry", "energy"])
    assert exit_.value.code == 2 and "energies" in capsys.readouterr().err
