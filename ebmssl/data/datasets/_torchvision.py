"""Load a torchvision dataset class with explained failures (private helper for the dataset modules)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from ebmssl.data.dataset import not_found


def load_torchvision(
    name: str,
    factory: Callable[..., Any],
    root: str,
    download: bool,
    folder: str,
    extra_fixes: Sequence[str] = (),
    **kwargs: Any,
) -> Any:
    """``factory(root, download=False, **kwargs)``; if absent and ``download``, retry with download=True.

    Raises DatasetNotFoundError naming the dataset, the directory tried and the fixes.
    """
    path = os.path.join(os.path.abspath(root), folder)
    try:
        return factory(root, download=False, **kwargs)
    except (RuntimeError, FileNotFoundError, OSError) as error:
        first_error: BaseException = error
    if download:
        try:
            return factory(root, download=True, **kwargs)
        except Exception as error:  # noqa: BLE001  (network errors come in many types)
            raise not_found(
                name,
                [path, "download (failed)"],
                [
                    f"check the internet connection, or place the files under {path} and set `root: {root}`",
                    *extra_fixes,
                ],
                error,
            ) from error
    raise not_found(
        name,
        [path],
        ["set `download: true` (needs internet)", f"point `root:` at the directory that holds {folder}/", *extra_fixes],
        first_error,
    ) from first_error
