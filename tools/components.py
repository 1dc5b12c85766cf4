#!/usr/bin/env python
"""List every registered component, grouped by registry, with the first line of its docstring.

    python tools/components.py                       # everything
    python tools/components.py --registry strategies # one registry (energies, strategies, backbones,
                                                     # heads, targets, architectures, datasets, views,
                                                     # optimizers, schedules, latent_regularisers)
    python tools/components.py --imports my_module   # also register a user's own components first
    python tools/components.py --verbose             # constructor arguments too

Strategies also show their family (contrastive | asymmetry | capacity) and, where set, their input kind
and the properties they are exempt from.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

# Optional subpackages: each registers its own components when it exists.
OPTIONAL_PACKAGES = ("ebmssl.models", "ebmssl.data", "ebmssl.training")


def load_components(extra_modules: list[str] | None = None) -> None:
    """Import ebmssl (energies, strategies), the optional subpackages that exist, and any user modules."""
    importlib.import_module("ebmssl")
    for name in OPTIONAL_PACKAGES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:  # the package exists but one of its own imports is missing: a real error
                raise
    if extra_modules:
        from ebmssl.config import import_modules

        import_modules(extra_modules, "--imports", [Path.cwd()])


def describe(registry_name: str, name: str, component: object, verbose: bool = False) -> str:
    from ebmssl.registry import describe_signature, first_doc_line

    line = f"  {name:<24} {first_doc_line(component)}"
    if registry_name == "strategies":
        tags = [getattr(component, "family", "?")]
        if getattr(component, "input_kind", "embedding") != "embedding":
            tags.append(f"input: {component.input_kind}")
        exempt = getattr(component, "exempt_properties", None) or {}
        if exempt:
            tags.append("exempt: " + ", ".join(sorted(exempt)))
        line = f"  {name:<24} [{'; '.join(tags)}] {first_doc_line(component)}"
    if verbose:
        try:
            line += f"\n  {'':<24}   args: {describe_signature(component)}"
        except (TypeError, ValueError):
            pass
    return line


def render(registry_filter: str | None = None, verbose: bool = False) -> str:
    from ebmssl.registry import REGISTRIES

    lines = []
    for registry_name, registry in REGISTRIES.items():
        if registry_filter and registry_name != registry_filter:
            continue
        lines.append(f"{registry_name} ({len(registry)})")
        if not len(registry):
            lines.append("  (none registered)")
        for name, component in registry.items():
            lines.append(describe(registry_name, name, component, verbose))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", help="show one registry only (e.g. energies, strategies, heads)")
    parser.add_argument("--imports", nargs="*", default=[], help="user modules to import first (their components register)")
    parser.add_argument("--verbose", "-v", action="store_true", help="also print constructor arguments")
    args = parser.parse_args(argv)
    repo_root = Path(__file__).resolve().parents[1]
    if str(repo_root) not in sys.path:
        sys.path.insert(0, str(repo_root))
    from ebmssl.registry import REGISTRIES, ConfigError

    try:
        load_components(args.imports)
    except ConfigError as error:
        print(f"components.py: {error}", file=sys.stderr)
        return 2

    if args.registry and args.registry not in REGISTRIES:
        import difflib

        close = difflib.get_close_matches(args.registry, list(REGISTRIES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        parser.error(f"unknown registry {args.registry!r}.{hint} Choose one of: {', '.join(REGISTRIES)}.")
    sys.stdout.write(render(args.registry, args.verbose))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
