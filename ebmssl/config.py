"""YAML configuration: loading, ``base:`` inheritance, ``imports:``, dotted overrides.

A config file is a YAML mapping. Three keys are special:

* ``base:`` a path (or list of paths), relative to the file, or a bare name such as ``methods/simclr``
  looked up under the config roots; the file's own keys are deep-merged over its bases, in order.
  ``defaults:`` is accepted as a synonym.
* ``imports:`` a list of Python modules imported before anything is built, so that a user's own
  components register themselves (the directory of the file and the working directory are on the path).
* ``_source`` is filled in with the file that defined the config (used in error messages).
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ebmssl.registry import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parent


def config_roots() -> list[Path]:
    """Directories searched for named configs: $EBMSSL_CONFIG_PATH, ./configs, the repository's configs."""
    roots = [Path(p) for p in os.environ.get("EBMSSL_CONFIG_PATH", "").split(os.pathsep) if p]
    roots += [Path.cwd() / "configs", PACKAGE_ROOT.parent / "configs", PACKAGE_ROOT / "configs"]
    seen, unique = set(), []
    for root in roots:
        key = root.resolve()
        if key not in seen and root.is_dir():
            seen.add(key)
            unique.append(root)
    return unique


def available_configs(subdir: str) -> list[str]:
    names: set[str] = set()
    for root in config_roots():
        folder = root / subdir
        if folder.is_dir():
            names.update(p.stem for p in folder.glob("*.yaml"))
    return sorted(names)


def find_config(name: str, subdir: str = "", relative_to: Path | None = None) -> Path:
    """Resolve a config reference: an existing path, a path relative to ``relative_to``, or a name."""
    candidates: list[Path] = []
    raw = Path(name)
    with_suffix = [raw] if raw.suffix in (".yaml", ".yml") else [raw.with_name(raw.name + ".yaml"), raw]
    for candidate in with_suffix:
        if relative_to is not None:
            candidates.append(relative_to / candidate)
        candidates.append(candidate)
        for root in config_roots():
            if subdir:
                candidates.append(root / subdir / candidate)
            candidates.append(root / candidate)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    names = available_configs(subdir) if subdir else []
    hint = f" Available under configs/{subdir}/: {', '.join(names)}." if names else ""
    import difflib

    close = difflib.get_close_matches(raw.stem, names, n=3, cutoff=0.5)
    suggestion = f" Did you mean {' or '.join(close)}?" if close else ""
    raise ConfigError(
        f"config {name!r} not found (looked for {', '.join(str(c) for c in candidates[:4])}, ...)."
        f"{suggestion}{hint} Pass an existing YAML path, or a name under one of the config roots "
        f"({', '.join(str(r) for r in config_roots()) or 'none found'}; add more with EBMSSL_CONFIG_PATH)."
    )


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base``; ``key: null`` in override keeps null.

    A component named anew replaces the old one instead of merging into it: when both mappings carry a
    ``name`` and the names differ (a budget's ``optimizer: {name: adamw, ...}`` over a method's
    ``{name: sgd, momentum: 0.9}``), the old component's keys are not the new one's arguments."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        old = merged.get(key)
        renamed = isinstance(value, Mapping) and isinstance(old, Mapping) and "name" in value and "name" in old
        if renamed and value["name"] != old["name"]:
            merged[key] = copy.deepcopy(dict(value))
        elif isinstance(value, Mapping) and isinstance(old, Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: is not valid YAML ({error}). Fix the syntax at the position shown.") from error
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path}: the top level must be a mapping of keys, got {type(data).__name__}. "
            f"Write `key: value` lines at the top level."
        )
    return dict(data)


def import_modules(modules: Any, where: str = "", search_dirs: Sequence[Path] = ()) -> None:
    """Import the modules listed under ``imports:`` so their components register."""
    if modules is None:
        return
    if isinstance(modules, str):
        modules = [modules]
    if not isinstance(modules, Sequence):
        raise ConfigError(f"{where}: `imports:` must be a list of module names, got {modules!r}.")
    for directory in [*search_dirs, Path.cwd()]:
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(
                f"{where}: `imports:` lists {module!r}, which cannot be imported ({error}). Check the "
                f"module name, and that its directory is the config's directory, the working directory, "
                f"or on PYTHONPATH."
            ) from error


def load_config(spec: str | os.PathLike[str] | Mapping[str, Any], subdir: str = "", _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load a config (a path, a name under ``configs/<subdir>``, or a mapping) with its bases resolved."""
    if isinstance(spec, Mapping):
        data, path = copy.deepcopy(dict(spec)), None
        source = str(data.get("_source", "<dict>"))
    else:
        path = find_config(str(spec), subdir)
        if path.resolve() in _seen:
            chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
            raise ConfigError(f"{path}: `base:` inheritance loops ({chain}). Remove one of the `base:` entries.")
        data = _read_yaml(path)
        source = str(path)
    directory = path.parent if path is not None else Path.cwd()
    import_modules(data.get("imports"), source, [directory])
    bases = data.pop("base", None) or data.pop("defaults", None) or []
    if isinstance(bases, str):
        bases = [bases]
    merged: dict[str, Any] = {}
    for base in bases:
        try:
            base_path = find_config(str(base), "", relative_to=directory)
        except ConfigError as error:
            raise ConfigError(f"{source}: `base: {base}` cannot be resolved. {error}") from None
        seen = _seen + ((path.resolve(),) if path is not None else ())
        parent = load_config(base_path, "", seen)
        parent.pop("_source", None)
        merged = deep_merge(merged, parent)
    merged = deep_merge(merged, data)
    merged["_source"] = source
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(
            f"override {text!r} is not of the form key.path=value. Write e.g. `train.epochs=5` or "
            f"`objective.energy.temperature=0.2`."
        )
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key part. Write dotted keys like `train.epochs=5`.")
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(config: Mapping[str, Any], overrides: Sequence[str], strict: bool = True) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML). With ``strict``, the parent key must exist."""
    result = copy.deepcopy(dict(config))
    source = f"{config['_source']}: " if config.get("_source") else ""
    for text in overrides:
        try:
            keys, value = parse_override(text)
        except ConfigError as error:
            raise ConfigError(f"{source}{error}") from None
        node: Any = result
        for depth, key in enumerate(keys[:-1]):
            if isinstance(node, list):
                if key.isdigit() and int(key) < len(node):
                    node = node[int(key)]
                    continue
                raise ConfigError(
                    f"{source}override {text!r}: {'.'.join(keys[:depth]) or 'the config'} is a list of "
                    f"{len(node)} items, so {key!r} is not a valid index. Use 0 to {len(node) - 1}."
                )
            if not isinstance(node, dict) or key not in node or not isinstance(node[key], (dict, list)):
                if strict and (not isinstance(node, dict) or key not in node):
                    visible = [k for k in node if not str(k).startswith("_")] if isinstance(node, dict) else []
                    import difflib

                    close = difflib.get_close_matches(key, visible, n=2)
                    hint = f" Did you mean {' or '.join(close)}?" if close else ""
                    raise ConfigError(
                        f"{source}override {text!r}: the config has no key {'.'.join(keys[: depth + 1])!r}.{hint} "
                        f"Keys at that level: {', '.join(sorted(visible)) or '(none)'}."
                    )
                node[key] = {}
            node = node[key]
        last = keys[-1]
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        else:
            node[last] = value
    return result


def get_path(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def dump_config(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None)
