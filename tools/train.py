#!/usr/bin/env python
"""Train a self-supervised model.

    accelerate launch tools/train.py --config configs/runs/simclr_fashion_mnist.yaml [key.path=value ...]
    python tools/train.py                       # the default: SimCLR on Fashion-MNIST, small ResNet, CPU-sized

Options: --output-dir DIR (default runs/<config name>), --resume (continue the run in DIR),
--overwrite (replace DIR). Overrides use dotted keys, e.g. ``train.epochs=5 data.batch_size=128``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML path or a name under configs/runs/ (default: simclr_fashion_mnist)")
    parser.add_argument("--output-dir", default=None, help="run directory (default: runs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its latest checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="delete --output-dir first")
    parser.add_argument("overrides", nargs="*", help="dotted-key overrides, e.g. train.epochs=5")
    args = parser.parse_args(argv)

    from ebmssl.registry import ConfigError
    from ebmssl.training.run import default_run_dir, resolve_config, run_training
    from ebmssl.training.trainer import TrainingDiverged

    try:
        config = resolve_config(args.config, args.overrides)
        run_dir = Path(args.output_dir) if args.output_dir else default_run_dir(config)
        saved = run_dir / "config.yaml"
        if args.resume and saved.is_file():
            # continue with the configuration the run started with (plus any overrides given now)
            config = resolve_config(str(saved), args.overrides)
        run_training(config, run_dir, resume=args.resume, overwrite=args.overwrite)
    except (ConfigError, FileNotFoundError) as error:  # bad config, missing dataset: one explained paragraph
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted: the last complete checkpoint is intact; continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
