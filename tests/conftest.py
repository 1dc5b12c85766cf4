"""Test-suite settings shared by every test folder.

* Torch runs single-threaded (override with EBMSSL_TEST_THREADS): unit tests use tiny tensors, where
  intra-op threads only add contention (a 10x slowdown on a loaded 2-core machine).
* Hypothesis profiles: "default" (no deadline: CPU timings vary), "ci" (derandomised, for reproducible
  CI runs), "thorough" (more examples, for local bug hunts). Select with HYPOTHESIS_PROFILE.
"""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(int(os.environ.get("EBMSSL_TEST_THREADS", "1")))

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "thorough", deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
