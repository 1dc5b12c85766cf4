"""Whole-config check: every mutation of a run config fails as a ConfigError naming the file and the key.

The fuzz test mutates a complete run config (a MoCo v2 run: queue, EMA target, temperature) at every
level and checks that loading + :func:`check_run` (the run's own build on the CPU, no data read) raises a
ConfigError whose message names the config file and the key that was changed; nothing else may escape,
and a mutation is accepted only if it is on :data:`ACCEPTED` with the reason it is a valid config.
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebmssl.config import load_config
from ebmssl.registry import ConfigError
from ebmssl.training.build import check_run
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

# mutations that produce a valid config, each with the reason; any other accepted mutation fails the test
ACCEPTED = {
    ("model.projector.batch_norm", True): "the projector may have batch norm (the base config has none)",
    ("model.predictor", None): "no predictor is the default (MoCo v2 has none)",
    ("model.target.final_momentum", None): "null: the momentum stays constant (the base config's value)",
    ("train.max_steps", None): "null: the run lasts train.epochs (the default)",
    ("train.progress_bar", True): "the progress bar is on by default",
    ("data.views.image_size", None): "null: the views take the dataset's image size",
    ("eval.labels_per_class", None): "null skips the few-label probe",
    ("eval.baselines", True): "the baselines are on by default",
    ("eval.plots", True): "the plots are on by default (the base config turns them off to be quick)",
}

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
            check_run(load_config(path))
        except ConfigError as error:
            message = str(error)
            assert str(path.parent) in message, message
            if key is not None and mutation[0] != "wrong_type":
                assert names_key(message, key), (key, message)
            elif key is not None:
                assert key in message or dotted(mutation[1][:1]) in message, (mutation, message)
        else:
            accepted = (dotted(mutation[1]), mutation[2]) if mutation[0] == "wrong_type" else None
            assert accepted in ACCEPTED, f"{mutation} was accepted; refuse it with a ConfigError or list it in ACCEPTED"


def test_every_allowed_mutation_is_still_a_mutation_of_the_base_config() -> None:
    """An ACCEPTED entry names a key of the base config and a value the fuzz test draws (no stale entries)."""
    for (key, value), reason in ACCEPTED.items():
        path = next(p for p in LEAVES if dotted(p) == key)
        assert value in WRONG and reason and path, (key, value)


def test_the_base_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(BASE))
    settings_ = check_run(load_config(path))
    assert settings_.data["batch_size"] == 16 and settings_.train["max_skipped_steps"] == 20


@pytest.mark.parametrize("target, value, message", [
    (("objective", "energy", "temperature"), -0.5, "`objective.energy.temperature` (energy 'cosine' argument) is -0.5; it must be greater than 0"),
    (("train", "optimizer", "lr"), True, "`train.optimizer.lr` (optimizer 'sgd' argument) expects float (> 0, <= 1000), got True"),
    (("train", "optimizer", "momentum"), 10**12, "`train.optimizer.momentum` (optimizer 'sgd' argument) is 1000000000000; it must be at most 1"),
    (("data", "views", "image_size"), 10**12, "data.views.image_size` is 1e+12, beyond any real size"),
    (("objective", "pairs", 0, 1), 10**12, "objective.pairs.0` is [0, 1000000000000]: view indices must be"),
    (("train", "seed"), 2**40, "train.seed` is 1099511627776; it must be at most 4294967295"),
    (("objective", "strategies", 0, "size"), 8, "objective.strategies.0.size` is 8, smaller than the global batch"),
    (("data", "batch_size"), 0, "data.batch_size` is 0; it must be at least 1"),
])
def test_range_errors_name_the_dotted_key(target: tuple, value: Any, message: str, tmp_path: Path) -> None:
    config = copy.deepcopy(BASE)
    get(config, target[:-1])[target[-1]] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        check_run(load_config(path))
    assert str(path) in str(error.value)


def run_tool(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """tools/train.py's ``main`` in this process (its return value is the exit code): (code, stdout, stderr)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ebmssl_train_tool", ROOT / "tools" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_prints_the_resolved_config_and_loads_no_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = copy.deepcopy(BASE)
    config["data"]["dataset"] = {"name": "fashion_mnist", "root": str(tmp_path / "nowhere"), "download": False,
                                 "system_dir": str(tmp_path / "nowhere")}  # would fail to load
    config["data"]["views"]["image_size"] = 28
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    code, out, err = run_tool(capsys, "--config", str(path), "--check", "train.epochs=7")
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert printed["train"]["epochs"] == 7 and printed["train"]["max_skipped_steps"] == 20
    assert "the configuration is valid" in err and not (ROOT / "runs" / "run").exists()
    code, _, err = run_tool(capsys, "--config", str(path), "--check", "objective.energy.temperature=-1")
    assert code == 2 and "objective.energy.temperature" in err and str(path) in err


def write(config: dict[str, Any], tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fashion_mnist_config(tmp_path: Path, in_channels: int) -> dict[str, Any]:
    config = copy.deepcopy(BASE)
    # the root holds nothing and download is off: the check must not read (or fetch) a file
    config["data"]["dataset"] = {"name": "fashion_mnist", "root": str(tmp_path / "nowhere"), "download": False,
                                 "system_dir": str(tmp_path / "nowhere")}
    config["data"]["views"] = {"name": "simclr", "image_size": 28}
    config["model"]["backbone"]["in_channels"] = in_channels
    return config


def test_the_check_builds_from_the_datasets_stated_info(tmp_path: Path) -> None:
    """Fashion-MNIST states 1 channel from its spec: in_channels=1 is right and accepted, 3 is refused."""
    check_run(load_config(write(fashion_mnist_config(tmp_path, 1), tmp_path)))
    with pytest.raises(ConfigError, match="model") as error:
        check_run(load_config(write(fashion_mnist_config(tmp_path, 3), tmp_path)))
    assert "channel" in str(error.value)


@pytest.mark.parametrize("processes, accumulation, batch, accepted", [(3, 1, 16, False), (2, 4, 16, True), (2, 3, 16, False), (4, 1, 16, True)])
def test_the_global_batch_must_split_over_the_launched_processes(
    processes: int, accumulation: int, batch: int, accepted: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", str(processes))
    config = copy.deepcopy(BASE)
    config["train"]["grad_accumulation"] = accumulation
    config["data"]["batch_size"] = batch
    path = write(config, tmp_path)
    if accepted:
        check_run(load_config(path))
        return
    with pytest.raises(ConfigError, match=re.escape(f"`data.batch_size` is {batch}, not divisible by processes ({processes})")):
        check_run(load_config(path))


def test_a_multi_process_misconfiguration_stops_before_any_process_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_training checks before it makes the process group or the run directory."""
    from ebmssl.training.run import run_training

    monkeypatch.setenv("WORLD_SIZE", "3")
    config = load_config(write(copy.deepcopy(BASE), tmp_path))
    with pytest.raises(ConfigError, match="data.batch_size"):
        run_training(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("spec, message", [
    ({"backend": "no_such_backend"}, "`train.compile.backend` is 'no_such_backend', not a torch.compile backend"),
    ({"mdoe": "max-autotune"}, "unknown key `train.compile.mdoe`. Did you mean `train.compile.mode`?"),
    ("yes", "`train.compile` expects bool | Mapping"),
])
def test_compile_settings_are_checked(spec: Any, message: str, tmp_path: Path) -> None:
    config = copy.deepcopy(BASE)
    config["train"]["compile"] = spec
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_run(load_config(write(config, tmp_path)))
    config["train"]["compile"] = {"backend": "aot_eager", "fullgraph": False}
    check_run(load_config(write(config, tmp_path)))


def test_a_queue_must_hold_the_global_batch(tmp_path: Path) -> None:
    config = copy.deepcopy(BASE)
    config["objective"]["strategies"][0]["size"] = 16  # exactly one global batch: accepted
    check_run(load_config(write(config, tmp_path)))
    config["data"]["batch_size"] = 32
    with pytest.raises(ConfigError, match=re.escape("`objective.strategies.0.size` is 16, smaller than the global batch data.batch_size=32")):
        check_run(load_config(write(config, tmp_path)))


@pytest.mark.parametrize("name", ["moco_queue", "nnclr"])
def test_every_queue_strategy_refuses_a_queue_smaller_than_the_global_batch(name: str) -> None:
    from ebmssl.registry import STRATEGIES
    from ebmssl.strategies.base import RunShape

    strategy = STRATEGIES.build({"name": name, "size": 64})
    strategy.check_run(RunShape(64, num_processes=4), "objective.strategies.1")
    with pytest.raises(ConfigError, match=re.escape("`objective.strategies.1.size` is 64, smaller than the global batch data.batch_size=65")):
        strategy.check_run(RunShape(65), "objective.strategies.1")


def test_swavs_per_process_queue_must_hold_the_rows_of_its_process() -> None:
    from ebmssl.registry import STRATEGIES
    from ebmssl.strategies.base import RunShape

    sinkhorn = STRATEGIES.build({"name": "sinkhorn", "queue_length": 32})
    sinkhorn.check_run(RunShape(64, num_processes=2), "objective.strategies.0")  # 32 rows per process: held
    STRATEGIES.build({"name": "sinkhorn", "queue_length": 0}).check_run(RunShape(64), "objective.strategies.0")  # no queue
    with pytest.raises(ConfigError, match=re.escape("`objective.strategies.0.queue_length` is 32, smaller than the 64 rows")):
        sinkhorn.check_run(RunShape(64), "objective.strategies.0")


@pytest.mark.slow
def test_every_wrong_type_or_absurd_value_is_refused_unless_allowed(tmp_path: Path) -> None:
    """The fuzz test samples; this walks every leaf x every wrong value once (about 280 configs)."""
    accepted = []
    for leaf in LEAVES:
        for value in WRONG:
            path, _ = apply(("wrong_type", leaf, value), tmp_path)
            try:
                check_run(load_config(path))
            except ConfigError:
                continue
            accepted.append((dotted(leaf), value))
    assert sorted(map(repr, accepted)) == sorted(map(repr, ACCEPTED)), "accepted but not allowed, or allowed but refused"
