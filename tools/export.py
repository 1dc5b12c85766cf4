#!/usr/bin/env python
"""Export a trained run as a folder a model hub takes unchanged (weights, config.json, model card, plots).

    python tools/export.py runs/simclr_fashion_mnist exported/simclr-fmnist
    python tools/export.py RUN OUT --push-to-hub your-name/simclr-fmnist      # then upload it (one commit)

OUT must not exist; it appears only when complete. The weights are written under the keys their library
loads (timm, torchvision, transformers; ebmssl's own for its small networks), config.json says how to
build the network, README.md is the model card generated from the run (method, config, data, training
time, the evaluation against random init and raw pixels, diagnostics, plots, license). --push-to-hub
needs `pip install "ebmssl[hf]"` and a token (`hf auth login`).

Exit codes: 0 done; 2 bad input (nothing written); 5 exported but the upload failed (the message says why).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="the run directory tools/train.py wrote")
    parser.add_argument("out_dir", help="the folder to write (must not exist)")
    parser.add_argument("--license", default="apache-2.0", help="license of the weights, a hub license id (default apache-2.0)")
    parser.add_argument("--push-to-hub", metavar="REPO", default=None, help="upload the folder to this hub repository (owner/name)")
    parser.add_argument("--private", action="store_true", help="create the hub repository as private")
    args = parser.parse_args(argv)

    from ebmssl.hub import HubUploadError, export_run, push_folder
    from ebmssl.registry import ConfigError

    try:
        out = export_run(Path(args.run_dir), Path(args.out_dir), license_id=args.license, repo_id=args.push_to_hub)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported {args.run_dir} -> {out}")
    if args.push_to_hub:
        try:
            url = push_folder(out, args.push_to_hub, private=args.private)
        except HubUploadError as error:
            print(f"error: {error}", file=sys.stderr)
            return 5
        print(f"uploaded to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
