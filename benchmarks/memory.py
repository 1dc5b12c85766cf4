"""Peak memory of this process, for benchmarks that run each case in a fresh interpreter."""

from __future__ import annotations

import resource
from pathlib import Path


def resident_peak_bytes() -> int:
    """This process's peak resident set: /proc's VmHWM, which starts afresh at exec, else ``ru_maxrss``.

    Not ``ru_maxrss`` on Linux: a child started by ``subprocess`` inherits its parent's high-water mark
    through the fork, so a large parent hides the child's own peak (a benchmark comparing two children
    printed a growth of 0 MiB for both)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
