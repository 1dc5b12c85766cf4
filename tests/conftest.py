"""Test-suite settings shared by every test folder.

* Torch runs single-threaded (override with EBMSSL_TEST_THREADS), and so do the processes tests launch
  (OMP_NUM_THREADS): unit tests use tiny tensors, where intra-op threads only add contention (a 10x
  slowdown on a loaded 2-core machine).
* Hypothesis profiles: "default" (no deadline: CPU timings vary), "ci" (derandomised, for reproducible
  CI runs), "thorough" (more examples, for local bug hunts). Select with HYPOTHESIS_PROFILE. The example
  database lives in the temporary directory, not in the repository.
* No test reaches the network: ``socket.connect`` to an address that is not this machine raises
  :class:`NetworkAccessInTests` (loopback and this host's own addresses stay allowed: torch.distributed
  rendezvous). A dataset that would download must be given a local copy instead.
* Slow (end-to-end) tests run first: with ``-n 2`` the long ones then spread over both workers and the
  many short ones fill the gaps at the end, so the two workers finish together. A module is one unit of work
  (``--dist loadscope``), so a module-scoped fixture (one torchrun launch for many parametrised cases) is built
  once; a session fixture shared across modules is built once per session through a file lock
  (tests/distributed/conftest.py).
* No test writes into the repository: ``git status --porcelain --ignored`` is taken when the session starts
  and compared when it ends (caches of Python, pytest and tools excepted); a new or changed path fails the run.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.database import DirectoryBasedExampleDatabase

torch.set_num_threads(int(os.environ.get("EBMSSL_TEST_THREADS", "1")))
# the processes tests launch (tools, torchrun workers) inherit one thread too: two test workers on two cores
# with multi-threaded children oversubscribe the machine (the memory soak took 358 s that way, ~60 s alone)
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("EBMSSL_TEST_THREADS", "1"))

ROOT = Path(__file__).resolve().parents[1]

_HYPOTHESIS_HOME = os.path.join(tempfile.gettempdir(), "ebmssl-hypothesis")
set_hypothesis_home_dir(_HYPOTHESIS_HOME)  # its caches (constants, examples) stay out of the repository
_database = DirectoryBasedExampleDatabase(os.path.join(_HYPOTHESIS_HOME, "examples"))
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], database=_database)
settings.register_profile("default", **_common)
settings.register_profile("ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests first (a stable sort: the order within a module is kept, equal on every xdist worker).

    ``make test`` distributes with ``--dist loadscope --no-loadscope-reorder``: a module (a class, for test
    methods) is one unit of work, so a module-scoped fixture (one torchrun launch, one trained run) is built
    once, and the units go out in this order, the modules holding slow tests first. (``--dist loadgroup``
    with ``xdist_group`` marks was used before; under pytest 9 xdist 3.8 can no longer rename node ids, so its
    groups were silently ignored and every shared fixture was built on both workers.)"""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# -- no network ------------------------------------------------------------------------------------------
class NetworkAccessInTests(RuntimeError):
    """A test tried to reach another machine."""


def _own_addresses() -> set[str]:
    addresses = {"0.0.0.0", "::"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            addresses.add(str(info[4][0]))
    except OSError:
        pass
    return addresses


_OWN = _own_addresses()


def is_local(address: object) -> bool:
    """Whether a socket address names this machine (loopback, its own interface addresses, a Unix socket)."""
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths and abstract names
    host = str(address[0]).split("%")[0]
    if host in ("localhost", socket.gethostname()) or host in _OWN:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name that is not ours


_ATTEMPTS: list[str] = []  # every refused address; the autouse fixture fails the test that made one


def _guarded(method):
    def connect(self: socket.socket, address, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_local(address):
            _ATTEMPTS.append(repr(address))  # recorded too: code that catches every exception cannot hide it
            raise NetworkAccessInTests(
                f"a test tried to reach {address!r}: tests run offline. Give the code a local copy (e.g. a dataset "
                f"`root:` or Fashion-MNIST's Debian files) instead of downloading."
            )
        return method(self, address, *args, **kwargs)

    return connect


socket.socket.connect = _guarded(socket.socket.connect)  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded(socket.socket.connect_ex)  # type: ignore[method-assign]


@pytest.fixture
def network_attempts() -> list[str]:
    """The addresses refused so far in this test (a test of the guard itself clears it when done)."""
    return _ATTEMPTS


@pytest.fixture(autouse=True)
def _fail_on_network_access():
    _ATTEMPTS.clear()
    yield
    if _ATTEMPTS:
        attempts, _ATTEMPTS[:] = list(_ATTEMPTS), []
        pytest.fail(f"the test tried to reach the network ({', '.join(attempts)}); tests run offline", pytrace=False)


# -- no writes into the repository -----------------------------------------------------------------------
_CACHES = ("__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache", ".mypy_cache", ".venv", ".coverage")


def repository_state() -> set[str] | None:
    """``git status --porcelain --ignored`` lines of the repository, caches left out; None outside a git checkout."""
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--", ".",
             *[f":(exclude){cache}" for cache in _CACHES], *[f":(exclude)**/{cache}" for cache in _CACHES]],
            cwd=ROOT, capture_output=True, text=True, timeout=60,  # excluded, so git never walks .venv
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    lines = set()
    for line in done.stdout.splitlines():
        path = line[3:]
        if not any(part in _CACHES or part.endswith(".pyc") for part in Path(path.strip('"')).parts):
            lines.add(line)
    return lines


_BEFORE = pytest.StashKey["set[str] | None"]()


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")  # xdist workers share the controller's session


def pytest_sessionstart(session: pytest.Session) -> None:
    if _is_controller(session.config):
        session.config.stash[_BEFORE] = repository_state()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _is_controller(session.config):
        return
    before, after = session.config.stash.get(_BEFORE, None), repository_state()
    if before is None or after is None:
        return
    written = sorted(after - before)
    if written:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("!", "tests wrote into the repository (or the checkout was edited during the run): write under tmp_path", red=True, bold=True)
            for line in written:
                reporter.write_line(f"  {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

