"""Import every submodule of a package so that its components register themselves."""

from __future__ import annotations

import importlib
import pkgutil
import sys


def import_submodules(package_name: str) -> None:
    package = sys.modules[package_name]
    for info in pkgutil.walk_packages(package.__path__, prefix=package_name + "."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        importlib.import_module(info.name)
