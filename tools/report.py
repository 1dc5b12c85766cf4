#!/usr/bin/env python
"""Render run directories into one Markdown report with PNG plots.

    python tools/report.py RUN_DIR [RUN_DIR ...] [--output DIR] [--title TEXT]

The report (DIR/report.md, default reports/report.md) holds the final evaluation and diagnostics tables,
the per-epoch collapse checks, overlaid curves (loss, kNN monitor, RankMe, std, energy gap, InfoNCE
bound), the singular-value spectra and the positive/negative energy histograms.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="run directories (tools/train.py or tools/experiment.py outputs)")
    parser.add_argument("--output", default="reports", help="folder for report.md and its plots (default: reports)")
    parser.add_argument("--title", default="ebmssl runs")
    args = parser.parse_args(argv)

    from experiments.report import render_report

    try:
        path = render_report(args.run_dirs, args.output, args.title)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
