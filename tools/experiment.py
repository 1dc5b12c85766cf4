#!/usr/bin/env python
"""Run an experiment of docs/experiments.md and write its results (results.json, PNG plots, summary.md).

    python tools/experiment.py configs/experiments/mi_bounds.yaml [--output-dir DIR]

Training experiments train each of their runs under DIR/runs/<name> (a run whose report.json exists with
the same resolved config is reused, so an interrupted experiment continues where it stopped; --no-train
redraws the analysis from the runs that have finished).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="experiment config, e.g. configs/experiments/mi_bounds.yaml")
    parser.add_argument("--output-dir", default=None, help="default: runs/experiments/<config name>")
    parser.add_argument("--no-train", action="store_true", help="analyse the finished runs only; train nothing")
    args = parser.parse_args(argv)

    from experiments.runner import run_experiment
    from ebmssl.registry import ConfigError

    try:
        run_experiment(args.config, args.output_dir, train=not args.no_train)
    except (ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
