"""Load a torchvision dataset class with explained failures (private helper for the dataset modules)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ebmssl.data.dataset import not_found

DOWNLOAD_TIMEOUT_SECONDS = 60.0  # per connection attempt and per read: a missing network fails, never hangs


@contextmanager
def download_timeout(seconds: float = DOWNLOAD_TIMEOUT_SECONDS) -> Iterator[None]:
    """Give every socket opened inside the block (torchvision's urllib downloads) a timeout of ``seconds``."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


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

    The download runs under :func:`download_timeout`. Raises DatasetNotFoundError naming the dataset, the
    directory tried and the fixes (the offline ones first).
    """
    path = os.path.join(os.path.abspath(root), folder)
    try:
        return factory(root, download=False, **kwargs)
    except (RuntimeError, FileNotFoundError, OSError) as error:
        first_error: BaseException = error
    if download:
        try:
            with download_timeout():
                return factory(root, download=True, **kwargs)
        except Exception as error:  # noqa: BLE001  (network errors come in many types)
            raise not_found(
                name,
                [path, f"download (failed; timeout {DOWNLOAD_TIMEOUT_SECONDS:g} s)"],
                [
                    f"offline: place the files under {path} (or point `root:` at them) and set `download: false`",
                    *extra_fixes,
                    "check the internet connection",
                ],
                error,
            ) from error
    raise not_found(
        name,
        [path],
        ["set `download: true` (needs internet)", f"point `root:` at the directory that holds {folder}/", *extra_fixes],
        first_error,
    ) from first_error
