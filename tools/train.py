#!/usr/bin/env python
"""Train a self-supervised model.

    accelerate launch tools/train.py --config configs/runs/simclr_fashion_mnist.yaml [key.path=value ...]
    python tools/train.py                       # the default: SimCLR on Fashion-MNIST, small ResNet, CPU-sized

    python tools/train.py --config CONFIG --check # validate the whole config and build the model on the CPU
                                                 # (the build the run makes), print it resolved; no data read

Options: --output-dir DIR (default runs/<config name>); --resume [auto|PATH] (continue the run in DIR from
its newest valid checkpoint, or from PATH); --overwrite (replace DIR; only a directory that tools/train.py
created, marked by its .ebmssl-run file, is ever deleted). Overrides use dotted keys, e.g.
``train.epochs=5 data.batch_size=128``.

Exit codes: 0 done; 2 configuration error or a --resume checkpoint that cannot be loaded (nothing
trained); 3 training stopped after train.max_skipped_steps non-finite steps in a row; 130 stopped by
Ctrl-C; 143 stopped by SIGTERM (preemption). After 130 and 143 a checkpoint of the last step is saved:
rerun the same command with --resume. See docs/reliability.md.
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
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="auto|PATH",
                        help="continue the run in --output-dir from its newest valid checkpoint (auto) or from PATH")
    parser.add_argument("--overwrite", action="store_true", help="delete --output-dir first (only if ebmssl created it)")
    parser.add_argument("--check", action="store_true", help="validate the resolved config, print it, and exit")
    parser.add_argument("overrides", nargs="*", help="dotted-key overrides, e.g. train.epochs=5")
    args = parser.parse_args(argv)

    from ebmssl.config import dump_config
    from ebmssl.registry import ConfigError
    from ebmssl.training.checkpoint import CheckpointError
    from ebmssl.training.preemption import Preempted
    from ebmssl.training.run import default_run_dir, resolve_config, run_training
    from ebmssl.training.trainer import TrainingDiverged
    from ebmssl.training.build import check_run

    try:
        config = resolve_config(args.config, args.overrides)
        if args.check:
            settings = check_run(config)
            resolved = {**config, "train": settings.train, "eval": settings.eval, "data": settings.data}
            print(dump_config({k: v for k, v in resolved.items() if not k.startswith("_")}), end="")
            print(f"# {config.get('_source')}: the configuration is valid", file=sys.stderr)
            return 0
        run_dir = Path(args.output_dir) if args.output_dir else default_run_dir(config)
        saved = run_dir / "config.yaml"
        if args.resume and saved.is_file():
            # continue with the configuration the run started with (plus any overrides given now)
            config = resolve_config(str(saved), args.overrides)
        run_training(config, run_dir, resume=args.resume or False, overwrite=args.overwrite)
    except (ConfigError, FileNotFoundError, CheckpointError) as error:  # bad config, missing dataset, unusable
        print(f"error: {error}", file=sys.stderr)  # --resume checkpoint: one explained paragraph
        return 2
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except Preempted as stop:
        print(str(stop), file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print("interrupted: the last complete checkpoint is intact; continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
