"""Whole-config validation: every mutation of a run config fails as a ConfigError naming the file and the key.

The fuzz test mutates a complete run config (a MoCo v2 run: queue, EMA target, temperature) at every
level and checks that loading + :func:`validate_config` either accepts it or raises ConfigError whose
message names the config file and the key that was changed; nothing else may escape.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebmssl.config import load_config
from ebmssl.registry import ConfigError
from ebmssl.training.validate import validate_config
from tests.training.test_methods_end_to_end import tiny_run_config

ROOT = Path(__file__).resolve().parents[2]


def base_config() -> dict[str, Any]:
    config = tiny_run_config("moco_v2")
    config.pop("_source", None)
    return config


BASE = base_config()


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value in ``node`` (mapping keys and list indices)."""
    found = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        found.append((*prefix, key))
        found += paths(value, (*prefix, key))
    return found


def mappings(node: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if isinstance(node, dict) else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        found += mappings(value, (*prefix, key))
    return found


def get(config: Any, path: tuple) -> Any:
    for key in path:
        config = config[key]
    return config


def dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


LEAVES = [p for p in paths(BASE) if not isinstance(get(BASE, p), (dict, list))]
MAPPINGS = mappings(BASE)
NAMED = [p for p in MAPPINGS if "name" in get(BASE, p)]
RANGES = [
    (("train", "epochs"), 0), (("train", "epochs"), -3), (("data", "batch_size"), 0), (("train", "log_every"), 0),
    (("train", "grad_accumulation"), 0), (("eval", "knn_temperature"), 0.0), (("eval", "knn_k"), -1),
    (("objective", "energy", "temperature"), -0.2), (("objective", "energy", "temperature"), 0),
    (("objective", "strategies", 0, "size"), 8), (("train", "max_skipped_steps"), 0),
    (("train", "checkpoint_every_minutes"), -1), (("train", "mixed_precision"), "fp8"),
]
WRONG = ["oops", [1, 2], {"nested": 1}, -1.5, True, None, 10**12]

mutation = st.one_of(
    st.tuples(st.just("unknown_key"), st.sampled_from(MAPPINGS)),
    st.tuples(st.just("wrong_type"), st.sampled_from(LEAVES), st.sampled_from(WRONG)),
    st.tuples(st.just("range"), st.sampled_from(RANGES)),
    st.tuples(st.just("missing_name"), st.sampled_from(NAMED)),
    st.tuples(st.just("yaml_syntax"), st.sampled_from(["train: {epochs: 3", "data:\n  - a\n b: 2", "key: [unclosed", "\tbad: tab"])),
    st.tuples(st.just("missing_import"), st.sampled_from(["no_such_module_xyz", "tests.no_such_module"])),
    st.tuples(st.just("base_cycle"), st.integers(1, 3)),
)


def apply(mutation: tuple, directory: Path) -> tuple[Path, str | None]:
    """Write the mutated config; return its path and the key the error must name (None: any message)."""
    config = copy.deepcopy(BASE)
    kind = mutation[0]
    path = directory / "run.yaml"
    if kind == "unknown_key":
        get(config, mutation[1])["zz_unknown"] = 1
        key = dotted((*mutation[1], "zz_unknown"))
    elif kind == "wrong_type":
        parent, last = get(config, mutation[1][:-1]), mutation[1][-1]
        parent[last] = copy.deepcopy(mutation[2])
        key = str(last)
    elif kind == "range":
        target, value = mutation[1]
        get(config, target[:-1])[target[-1]] = value
        key = dotted(target)
    elif kind == "missing_name":
        del get(config, mutation[1])["name"]
        key = "name"
    elif kind == "yaml_syntax":
        path.write_text(mutation[1])
        return path, None
    elif kind == "missing_import":
        config["imports"] = [mutation[1]]
        key = mutation[1]
    else:  # a base: cycle through n files
        n = mutation[1]
        for i in range(n):
            (directory / f"part{i}.yaml").write_text(yaml.safe_dump({"base": f"part{(i + 1) % n}.yaml"}))
        config["base"] = "part0.yaml"
        key = "base"
    path.write_text(yaml.safe_dump(config))
    return path, key


def names_key(message: str, key: str) -> bool:
    """The message names ``key`` as a dotted path, or (inside a component) its section and last part."""
    if key in message:
        return True
    parts = key.split(".")
    section_named = parts[0] in message
    last = parts[-1]
    return section_named and (last in message or last.isdigit())


@settings(max_examples=int(os.environ.get("EBMSSL_FUZZ_EXAMPLES", "120")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mutation=mutation)
def test_only_config_errors_escape_and_they_name_file_and_key(mutation: tuple) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path, key = apply(mutation, Path(tmp))
        try:
            validate_config(load_config(path))
        except ConfigError as error:
            message = str(error)
            assert str(path.parent) in message, message
            if key is not None and mutation[0] != "wrong_type":
                assert names_key(message, key), (key, message)
            elif key is not None:
                assert key in message or dotted(mutation[1][:1]) in message, (mutation, message)
        else:
            assert mutation[0] == "wrong_type", f"{mutation} was accepted"


def test_the_base_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(BASE))
    settings_ = validate_config(load_config(path))
    assert settings_.data["batch_size"] == 16 and settings_.train["max_skipped_steps"] == 20


@pytest.mark.parametrize("target, value, message", [
    (("objective", "energy", "temperature"), -0.5, "objective.energy.temperature` is -0.5; a temperature must be greater than 0"),
    (("objective", "strategies", 0, "size"), 8, "objective.strategies.0.size` is 8, smaller than the global batch"),
    (("data", "batch_size"), 0, "data.batch_size` is 0; it must be at least 1"),
])
def test_range_errors_name_the_dotted_key(target: tuple, value: Any, message: str, tmp_path: Path) -> None:
    config = copy.deepcopy(BASE)
    get(config, target[:-1])[target[-1]] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")) as error:
        validate_config(load_config(path))
    assert str(path) in str(error.value)


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_check_prints_the_resolved_config_and_loads_no_data(tmp_path: Path) -> None:
    config = copy.deepcopy(BASE)
    config["data"]["dataset"] = {"name": "fashion_mnist", "root": str(tmp_path / "nowhere")}  # would fail to load
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    completed = run_tool("--config", str(path), "--check", "train.epochs=7")
    assert completed.returncode == 0, completed.stderr
    printed = yaml.safe_load(completed.stdout)
    assert printed["train"]["epochs"] == 7 and printed["train"]["max_skipped_steps"] == 20
    assert "the configuration is valid" in completed.stderr and not (ROOT / "runs" / "run").exists()
    bad = run_tool("--config", str(path), "--check", "objective.energy.temperature=-1")
    assert bad.returncode == 2 and "objective.energy.temperature" in bad.stderr and str(path) in bad.stderr
