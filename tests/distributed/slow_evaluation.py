"""Test-only: imported by a run config (``imports:``), makes every process's final evaluation slow on purpose.

Each call of ``ebmssl.evaluation.evaluate_features`` (the probes of one encoder) first sleeps
``EBMSSL_SLOW_EVALUATION`` seconds, as a large evaluation set would take.
"""

from __future__ import annotations

import functools
import os
import time

import ebmssl.evaluation

_probe = ebmssl.evaluation.evaluate_features


@functools.wraps(_probe)
def slow_evaluate_features(*args, **kwargs):
    time.sleep(float(os.environ.get("EBMSSL_SLOW_EVALUATION", "0")))
    return _probe(*args, **kwargs)


ebmssl.evaluation.evaluate_features = slow_evaluate_features
