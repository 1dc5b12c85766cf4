"""The image-loading suites of ``tools/benchmark.py``: ``decode`` (CPU ms per image to decode a JPEG and cut
one view) and ``loader`` (images/s, two SimCLR views each, from a folder of JPEGs or its WebDataset shards,
against torchvision's ImageFolder with per-image v2 transforms of the same recipe). The suites' arguments are
tools/benchmark.py's (``--folder``, ``--images``, ``--workers``, ``--loader-*``, ``--repeats``)."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def photo_folder(args: argparse.Namespace) -> str:
    """The benchmark folder: ``--folder`` or (built once under /tmp) the sample photos at 300-1000 px and
    Fashion-MNIST upscaled to 256-512 px, ``--images`` JPEGs in all."""
    if args.folder:
        return args.folder
    from ebmssl.data.testing import write_photo_folder

    folder = Path(f"/tmp/ebmssl-bench-photos-{args.images}")
    if not (folder / "photos").is_dir():
        write_photo_folder(folder, count=args.images)
    return str(folder)


def bench_decode(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    import glob

    from PIL import Image
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as TF

    from ebmssl.data.decode import load_crops
    from ebmssl.data.streamed_source import crop_plan
    from ebmssl.data.views.base import ViewRecipe

    files = sorted(glob.glob(f"{photo_folder(args)}/**/*.jpg", recursive=True))[:: max(1, args.images // 100)]
    rows = []
    for size in (96, 224):
        recipe = ViewRecipe(size=size)

        def pil(draft: bool) -> None:
            for k, path in enumerate(files):
                if draft:
                    load_crops(path, 3, crop_plan([recipe], k))
                else:
                    with Image.open(path) as image:
                        boxes, _ = crop_plan([recipe], k)(*image.size)
                        image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, box=boxes[0])

        def tv() -> None:
            for k, path in enumerate(files):
                x = decode_jpeg(read_file(path))
                (x0, y0, x1, y1), = crop_plan([recipe], k)(x.shape[-1], x.shape[-2])[0]
                TF.resized_crop(x, int(y0), int(x0), int(y1 - y0), int(x1 - x0), [size, size], antialias=True)

        candidates = {"PIL full decode": lambda: pil(False), "ours (draft or decode_jpeg)": lambda: pil(True), "torchvision.io": tv}
        times: dict[str, list[float]] = {name: [] for name in candidates}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one decoder per worker process: compare single-thread costs
        for _ in range(max(3, args.repeats // 2)):  # interleaved rounds; CPU time of this process (robust to load)
            for name, fn in candidates.items():
                start = time.process_time()
                fn()
                times[name].append(time.process_time() - start)
        torch.set_num_threads(threads)
        base = statistics.median(times["PIL full decode"])
        for name, values in times.items():
            rows.append({"size": size, "decoder": name, "cpu_ms_per_image": 1e3 * statistics.median(values) / len(files),
                         "vs_full_decode": statistics.median(values) / base})  # fmt: skip
    return rows


class TwoViews:
    """Two independent draws of a per-image transform (what the peers' SimCLR transforms do)."""

    def __init__(self, transform: Callable[[Any], Any]) -> None:
        self.transform = transform

    def __call__(self, image: Any) -> list[Any]:
        return [self.transform(image), self.transform(image)]


def torchvision_simclr(size: int) -> Callable[[Any], Any]:
    """SimCLR's ImageNet recipe as per-image torchvision v2 transforms on PIL images (as lightly/solo-learn)."""
    from torchvision.transforms import v2

    kernel = max(3, int(0.1 * size) | 1)
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])  # fmt: skip


def photo_shards(args: argparse.Namespace, folder: str) -> str:
    """The photo folder written into tar shards of 64 samples by tools/make_shards.py (built once, cached)."""
    from tools.make_shards import make_shards

    out = Path(f"{folder}-shards")
    if not list(out.glob("train-*.tar")):
        make_shards(folder, str(out), 64)
    return str(out / ("train-{%06d..%06d}.tar" % (0, len(list(out.glob("train-*.tar"))) - 1)))


def bench_loader(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Steady-state images/s of three loaders, median over rounds: ours from the folder, ours from the same
    images in WebDataset tar shards, torchvision's ImageFolder.

    Each round builds one loader (the three in turn, the order rotating every round), drains the batches
    its workers prefetched during start-up (workers x prefetch_factor, untimed), then times
    ``--loader-batches`` batches, and shuts the loader down before the next one runs: no loader's workers
    fill a queue while another is timed. All use ``--workers`` workers and prefetch_factor 2.
    """
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from ebmssl.data import build_dataset, build_views
    from ebmssl.data.streamed_source import StreamedSource

    folder = photo_folder(args)
    shards = photo_shards(args, folder)
    batch, workers, batches = args.loader_batch, args.workers, args.loader_batches
    prefetch = 2
    drain = max(1, workers * prefetch)
    rows = []
    for size in args.loader_sizes:
        common = {"image_size": size, "num_workers": workers, "prefetch_factor": prefetch}
        datasets = {"ours": build_dataset({"name": "unlabeled_folder", "path": folder, **common}, train=True),
                    "ours_shards": build_dataset({"name": "webdataset", "urls": shards, **common}, train=True)}  # fmt: skip
        views = build_views({"name": "simclr", "image_size": size, "jitter_strength": 1.0, "blur_prob": 0.5}, datasets["ours"])

        def ours(name: str) -> Callable[[], list[torch.Tensor]]:
            source = StreamedSource(datasets[name], views, seed=0, global_batch=batch, micro_batch=batch,
                                    num_processes=1, process_index=0, device=device)  # fmt: skip
            state = {"step": 0}

            def next_batch() -> list[torch.Tensor]:
                state["step"] += 1
                return source.batch(state["step"] - 1).views

            return next_batch

        def theirs() -> Callable[[], list[torch.Tensor]]:
            loader = DataLoader(
                ImageFolder(folder, transform=TwoViews(torchvision_simclr(size))), batch_size=batch, shuffle=True,
                num_workers=workers, persistent_workers=workers > 0, prefetch_factor=prefetch if workers else None,
                drop_last=True, pin_memory=device.type == "cuda",
            )  # fmt: skip
            state = {"iterator": iter(loader)}

            def next_batch() -> list[torch.Tensor]:
                try:
                    return next(state["iterator"])[0]
                except StopIteration:
                    state["iterator"] = iter(loader)
                    return next(state["iterator"])[0]

            return next_batch

        makers = {"ours": lambda: ours("ours"), "ours_shards": lambda: ours("ours_shards"), "torchvision": theirs}
        rates: dict[str, list[float]] = {name: [] for name in makers}
        names = list(makers)
        for round_number in range(args.loader_rounds):
            for name in names[round_number % 3 :] + names[: round_number % 3]:  # rotate who goes first
                next_batch = makers[name]()
                for _ in range(drain + 1):
                    next_batch()
                start = time.perf_counter()
                for _ in range(batches):
                    [v.to(device, non_blocking=True) for v in next_batch()]
                if device.type == "cuda":
                    torch.cuda.synchronize()
                rates[name].append(batches * batch / (time.perf_counter() - start))
                del next_batch  # shuts the loader's workers down before the next loader runs
        median = {k: statistics.median(v) for k, v in rates.items()}
        ratios = [o / t for o, t in zip(rates["ours"], rates["torchvision"])]
        rows.append({
            "size": size, "workers": workers, "batch": batch, "rounds": args.loader_rounds,
            "ours_images_per_s": median["ours"], "ours_shards_images_per_s": median["ours_shards"],
            "torchvision_images_per_s": median["torchvision"], "ratio": median["ours"] / median["torchvision"],
            "shards_ratio": median["ours_shards"] / median["torchvision"],
            "round_ratios": " ".join(f"{r:.2f}" for r in ratios),
            "load_average": " ".join(f"{v:.1f}" for v in os.getloadavg()),
        })  # fmt: skip
    return rows
