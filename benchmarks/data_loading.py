"""Data loading: images/s of one epoch of 64 px batches from a folder of JPEGs too large for memory,
decoded every epoch (before) against decoded once per node into a uint8 cache (after).

    python -m benchmarks.data_loading [--quick] [--device auto|cpu|cuda] [--json PATH]

A CelebA-like folder is written to a temporary folder: N JPEGs of 178x218 RGB (CelebA's aligned size),
a face-like blob on a gradient with noise, one class. The streaming path is forced (IN_MEMORY_BYTES
patched to 0), as CelebA at 64 px (2.49 GB as uint8) takes it. Every epoch is the training split
(80 %) in shuffled batches of 64 moved to the device and scaled to [-1, 1], as a GAN trial reads it.
"before" is the loader of earlier versions, rebuilt here: ImageFolder + Resize(64) + CenterCrop(64) +
PILToTensor under a DataLoader of 4 workers, not persistent (forked again each epoch). "after" is
trainers/data.py: the first epoch of the first trial on a node (its wall time includes `data.load`,
which decodes every image once into the cache), the first epoch of a later trial (the cache found:
`data.load` included) and a warm epoch (the memmap through persistent workers). The worker counts
follow this process's torch threads and CPU affinity, as a trial's follow its resources.cpu. Each
figure is the median of the repeats; the cold rows start from an empty cache each repeat. The
JPEGs and the cache are in the page cache (a node's second epoch, not a cold disk).
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

from benchmarks.report import Table, machine, median, parser, publish
from trainers import data, runtime

SIZE = 64  # px: the CelebA case
BATCH = 64
OLD_WORKERS = 4  # what the loader of earlier versions hard-coded
CELEBA = (178, 218)  # width, height of CelebA's aligned images


@dataclass(frozen=True)
class Settings:
    images: int  # JPEGs in the folder (train split: 80 % of them)
    repeats: int


SETTINGS = {True: Settings(images=1500, repeats=1), False: Settings(images=6000, repeats=3)}


def write_folder(root: Path, n: int, seed: int = 0) -> Path:
    """n CelebA-like JPEGs (178x218 RGB, quality 90) in root/faces: smooth, so they decode like photos."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = CELEBA
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    folder = root / "faces"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        top, bottom, skin = (rng.uniform(0, 255, 3).astype(np.float32) for _ in range(3))
        t = (yy / height)[..., None]
        image = top * (1 - t) + bottom * t
        cx, cy = rng.uniform(0.35, 0.65) * width, rng.uniform(0.4, 0.6) * height
        rx, ry = rng.uniform(0.2, 0.3) * width, rng.uniform(0.25, 0.35) * height
        face = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1)[..., None]
        image = np.where(face, skin, image) + rng.normal(0, 6, (height, width, 1)).astype(np.float32)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def folder_config(root: Path) -> dict[str, Any]:
    return {**data.DEFAULTS, "dataset": "folder", "data_path": str(root), "image_size": SIZE, "channels": 3}


def old_batches(root: Path, device: torch.device) -> Iterator[data.Batch]:
    """One epoch of the training split as earlier versions streamed it (their LoaderSplit)."""
    import torchvision
    from torchvision import transforms

    steps = [transforms.Resize(SIZE), transforms.CenterCrop(SIZE), transforms.PILToTensor()]
    dataset = torchvision.datasets.ImageFolder(str(root), transform=transforms.Compose(steps))
    train, _, _ = data.split_indices(len(dataset), folder_config(root), has_test=False)
    with warnings.catch_warnings():  # 4 workers on fewer cores: torch warns, as it did for every trial
        warnings.filterwarnings("ignore", "This DataLoader will create", UserWarning)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, train.tolist()), batch_size=BATCH, shuffle=True, drop_last=True,
            num_workers=OLD_WORKERS, pin_memory=device.type == "cuda", persistent_workers=False)
        for x, y in loader:
            yield data.to_unit_range(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)


def epoch(batches: Iterator[data.Batch], device: torch.device) -> int:
    """Consume an epoch's batches (waiting for the device at the end); the images it held."""
    images = 0
    for x, _ in batches:
        images += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images


def trial(config: dict[str, Any], device: torch.device, epochs: int) -> tuple[float, list[tuple[int, float]]]:
    """What a trial does with its data: load it, then train `epochs` epochs (here: only read them).
    The seconds `data.load` took, and each epoch's images and seconds."""
    start = time.perf_counter()
    loaded = data.load(config, device)
    load_s = time.perf_counter() - start
    timings = []
    for _ in range(epochs):
        start = time.perf_counter()
        images = epoch(loaded.train.batches(BATCH, shuffle=True, drop_last=True), device)
        timings.append((images, time.perf_counter() - start))
    del loaded
    gc.collect()  # its persistent workers go now, not during the next measurement
    return load_s, timings


def measure(root: Path, device: str, settings: Settings) -> dict[str, Any]:
    """Images/s of each loader (lists, one figure a repeat), the workers used, the cache's build time."""
    dev = runtime.device(device)
    config = folder_config(root)
    rates: dict[str, list[float]] = {"before": [], "first": [], "later": [], "warm": []}
    build = []
    cache = Path(tempfile.mkdtemp(prefix="gansweep-cache-"))
    try:
        with mock.patch.object(data, "IN_MEMORY_BYTES", 0), \
                mock.patch.dict(os.environ, {"GANSWEEP_CACHE": str(cache)}):
            for repeat in range(settings.repeats):
                print(f"data_loading: repeat {repeat + 1}/{settings.repeats}", file=sys.stderr, flush=True)
                start = time.perf_counter()
                images = epoch(old_batches(root, dev), dev)
                rates["before"].append(images / (time.perf_counter() - start))
                shutil.rmtree(cache / "data", ignore_errors=True)  # the first trial on a fresh node
                load_s, [(images, took)] = trial(config, dev, epochs=1)
                rates["first"].append(images / (load_s + took))
                build.append(load_s)
                load_s, [(images, took), (warm_images, warm_s)] = trial(config, dev, epochs=2)  # cache found
                rates["later"].append(images / (load_s + took))
                rates["warm"].append(warm_images / warm_s)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {"images_per_s": rates, "train_images": images, "load_s_cold": build,
            "workers": {"before": OLD_WORKERS, "build": runtime.usable_cpus(),
                        "stream": data.loader_workers()}}


def table(result: dict[str, Any], settings: Settings, device: str, quick: bool) -> Table:
    rates, workers = result["images_per_s"], result["workers"]
    base = median(rates["before"])
    labels = {
        "before": ("before: decoded every epoch (4 workers, forked each epoch)", str(workers["before"])),
        "first": ("after: first epoch of a node's first trial (load decodes once into the cache)",
                  f"{workers['build']} decoding, then {workers['stream']}"),
        "later": ("after: first epoch of a later trial (cache found; load included)", str(workers["stream"])),
        "warm": ("after: a warm epoch (memmap, persistent workers)", str(workers["stream"])),
    }
    rows = [(label, used, median(rates[key]), f"{median(rates[key]) / base:.2f}x")
            for key, (label, used) in labels.items()]
    dev = runtime.device(device)
    where = machine(dev)
    per_image = 3 * SIZE * SIZE
    notes = [f"- {settings.images:,} JPEGs of 178x218 ({result['train_images']:,} training images an epoch); "
             f"{where['cores']} cores, {where['threads']} torch threads. The cache holds {per_image:,} bytes "
             f"an image: CelebA's 202,599 take {202_599 * per_image / 1e9:.2f} GB, decoded once per node.",
             f"- The first trial's load (decoding into the cache): median "
             f"{median(result['load_s_cold']):.1f} s; every later epoch and trial reads the memmap."]
    return Table(
        name="data_loading",
        title=f"Data loading: images/s of one epoch of {SIZE} px batches of {BATCH}, a folder of JPEGs too "
              f"large for memory, median of {settings.repeats} ({where['device']}"
              f"{', ' + where['gpu'] if where['gpu'] else ''}, {'quick' if quick else 'full'})",
        header=("loader", "workers", "images/s", "vs before"), rows=rows, notes=notes,
        details={"settings": vars(settings), **result})


def tables(quick: bool, device: str) -> list[Table]:
    settings = SETTINGS[quick]
    root = Path(tempfile.mkdtemp(prefix="gansweep-faces-"))
    try:
        print(f"data_loading: writing {settings.images:,} JPEGs to {root}", file=sys.stderr, flush=True)
        write_folder(root, settings.images)
        return [table(measure(root, device, settings), settings, device, quick)]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parser("data_loading", __doc__, "fewer images, one repeat (see SETTINGS)").parse_args(argv)
    return publish("data_loading", args, tables(args.quick, args.device), args.device)


if __name__ == "__main__":
    sys.exit(main())
