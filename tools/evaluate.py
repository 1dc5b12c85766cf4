#!/usr/bin/env python
"""Evaluate a trained backbone offline: kNN, full linear probe, few-label linear probe; with --dense also
the patch-level linear probe (mIoU, pixel accuracy) on the seeded Fashion-MNIST mosaics.

    python tools/evaluate.py --checkpoint runs/simclr_fashion_mnist            # the run's latest checkpoint
    python tools/evaluate.py --checkpoint runs/simclr_fashion_mnist/checkpoints/step-00000390
    python tools/evaluate.py --checkpoint RUN --labels-per-class 10 --knn-k 200 --baselines
    python tools/evaluate.py --checkpoint RUN --dense --baselines             # + segmentation mIoU
    python tools/evaluate.py --checkpoint RUN --dense-only --dense-num-train 200   # the dense probe alone

The method's architecture is rebuilt from the run's saved ``config.yaml`` with the builder training used
(input channels from the view pipeline, so ``to_rgb: true`` gives 3), and its encoder's weights are read
from the checkpoint's ``model.safetensors`` (or the run's exported ``backbone.safetensors``); features
are the encoder's, on the un-augmented images. The dense probe (ebmssl/evaluation/dense.py) reads the
encoder's patch tokens or last feature map on 56 px mosaics (docs/data.md). Results are printed and
written to ``<run>/evaluation.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def find_run(path: Path) -> tuple[Path, Path | None]:
    """Return (run directory, checkpoint directory or None) for a run or checkpoint path."""
    from ebmssl.registry import ConfigError
    from ebmssl.training.checkpoint import latest_checkpoint

    path = path.resolve()
    if (path / "config.yaml").is_file():
        return path, latest_checkpoint(path / "checkpoints")
    if path.parent.name == "checkpoints" and (path.parent.parent / "config.yaml").is_file():
        return path.parent.parent, path
    raise ConfigError(
        f"--checkpoint {path}: neither a run directory (with config.yaml) nor a checkpoint inside one "
        f"(RUN/checkpoints/step-N). Pass the directory that tools/train.py wrote."
    )


def module_prefix(root, module) -> str:
    """The state-dict prefix of ``module`` inside ``root`` ("online.backbone." for the joint-embedding encoder)."""
    for name, candidate in root.named_modules():
        if candidate is module:
            return f"{name}." if name else ""
    raise ValueError("the encoder is not a submodule of the learner")


def load_backbone(run_dir: Path, checkpoint: Path | None, config, views, num_classes):
    """The run's encoder, built as training built it (the same builder, the views' channel count), with its weights."""
    from safetensors.torch import load_file

    import ebmssl
    from ebmssl.registry import ConfigError
    from ebmssl.models.architectures import build_learner

    objective = ebmssl.build_objective(config)
    learner = build_learner(config.get("model") or {}, objective, views.num_global, views.channels,
                            where=f"{run_dir / 'config.yaml'}: model")
    backbone = learner.encoder
    if checkpoint is not None and (checkpoint / "model.safetensors").is_file():
        state = load_file(str(checkpoint / "model.safetensors"))
        prefix = module_prefix(learner, backbone)
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        source = checkpoint / "model.safetensors"
    elif (run_dir / "backbone.safetensors").is_file():
        state, source = load_file(str(run_dir / "backbone.safetensors")), run_dir / "backbone.safetensors"
    else:
        raise ConfigError(f"{run_dir}: no checkpoint and no backbone.safetensors to evaluate. Train the run first.")
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if [k for k in missing if not k.startswith("fc.")] or unexpected:
        raise ConfigError(
            f"{source}: the weights do not fit the backbone in {run_dir / 'config.yaml'} (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}). Was the config edited after training?"
        )
    return backbone.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="run directory or RUN/checkpoints/step-N")
    parser.add_argument("--knn-k", type=int, default=None)
    parser.add_argument("--knn-temperature", type=float, default=None)
    parser.add_argument("--labels-per-class", type=int, default=None)
    parser.add_argument("--linear-epochs", type=int, default=None)
    parser.add_argument("--num-train", type=int, default=None, help="train images used (default: the run's)")
    parser.add_argument("--baselines", action="store_true", help="also evaluate a random-init encoder and raw pixels")
    parser.add_argument("--dense", action="store_true", help="also run the patch-level linear probe (mosaic mIoU)")
    parser.add_argument("--dense-only", action="store_true", help="run the dense probe alone (no kNN / linear probes)")
    parser.add_argument("--dense-num-train", type=int, default=None, help="train mosaics (default: the run's eval.dense_num_train)")
    parser.add_argument("--dense-num-test", type=int, default=None, help="test mosaics (default: the run's eval.dense_num_test)")
    args = parser.parse_args(argv)

    from ebmssl.config import load_config
    from ebmssl.data import build_dataset, build_views
    from ebmssl.registry import ConfigError
    from ebmssl.training.report import evaluate_encoders, format_table
    from ebmssl.schema import EvalSection, resolve_section
    from ebmssl.training.validate import data_section

    try:
        run_dir, checkpoint = find_run(Path(args.checkpoint))
        config = load_config(run_dir / "config.yaml")
        data = data_section(config, str(run_dir / "config.yaml"))
        train_set = build_dataset(data["dataset"], train=True)
        if data.get("num_train"):
            train_set = train_set.subset(int(data["num_train"]), seed=int((config.get("train") or {}).get("seed", 0)))
        test_set = build_dataset(data.get("test_dataset") or data["dataset"], train=False)
        views = build_views(data["views"], train_set)
        backbone = load_backbone(run_dir, checkpoint, config, views, train_set.num_classes)
        eval_cfg = resolve_section(config.get("eval"), EvalSection, "eval.", str(run_dir / "config.yaml"))
        for key, value in (("knn_k", args.knn_k), ("knn_temperature", args.knn_temperature), ("labels_per_class", args.labels_per_class),
                           ("linear_epochs", args.linear_epochs), ("num_train", args.num_train),
                           ("dense_num_train", args.dense_num_train), ("dense_num_test", args.dense_num_test)):
            if value is not None:
                eval_cfg[key] = value
        encoders = {"trained": backbone}
        if args.baselines:
            from ebmssl.models import random_init_backbone

            seed = int((config.get("train") or {}).get("seed", 0)) + 12345  # the seed training's baseline uses
            encoders["random_init"] = random_init_backbone(config.get("model"), views.channels, seed).eval()
            encoders["raw_pixels"] = None
        dense = args.dense or args.dense_only
        if dense:
            from ebmssl.evaluation.dense import add_dense_evaluation, check_dense_backbone

            check_dense_backbone(backbone)
        results = {} if args.dense_only else evaluate_encoders(encoders, train_set, test_set, views.eval_transform, eval_cfg)
        dense_iou = add_dense_evaluation(results, encoders, views, eval_cfg) if dense else None
    except (ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(results))
    out = {"checkpoint": str(checkpoint or run_dir / "backbone.safetensors"), "results": results}
    if dense_iou is not None:
        out["dense_iou"] = dense_iou
    (run_dir / "evaluation.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
