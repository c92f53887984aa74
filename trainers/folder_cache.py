"""A folder of images decoded once per node into a uint8 cache: a .npy memmap of (N, C, H, W) under
cache_root()/data/<key>, which every later trial on the node reads instead of its images
(trainers/data.py streams from it, or holds it in memory)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainers import runtime
from trainers.config import cache_root

CACHE_FORMAT = 1  # part of every folder cache's key: bump it when the decoding below changes
BUILD_BATCH = 256  # images per decoded batch while a folder cache is built
PROGRESS_SECONDS = 30.0  # a progress line at least this often while a folder cache is built


@dataclass
class FolderCache:
    """A folder decoded once: uint8 images (N, C, H, W) as a read-only memmap, int64 labels (N,), in
    ImageFolder's order."""
    path: Path  # the cache's directory
    images: np.ndarray
    labels: np.ndarray
    built: bool  # decoded by this call (False: found, made earlier or by another process)

    @property
    def images_path(self) -> Path:
        return self.path / "images.npy"


def folder_cache(dataset: torch.utils.data.Dataset, root: Path, size: int, channels: int) -> FolderCache:
    """The uint8 cache of an ImageFolder `dataset` (its transform giving `channels` x size x size uint8
    tensors), decoded now if no process on this node has done it yet.

    Made once per node: under a file lock, into a temporary folder renamed into place when complete,
    so trials that start together wait for one decoding and never read half a cache."""
    from filelock import FileLock, Timeout

    key = cache_key(dataset, root, size, channels)
    path = cache_root() / "data" / key
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            print(f"waiting for another process to finish caching {root} ({key})", file=sys.stderr,
                  flush=True)
            lock.acquire()
        try:
            if not path.is_dir():
                _build(dataset, root, path, (len(dataset), channels, size, size))
                return _open(path, built=True)
        finally:
            lock.release()
    return _open(path, built=False)


def cache_key(dataset: torch.utils.data.Dataset, root: Path, size: int, channels: int) -> str:
    """The folder (resolved), its images' names, classes, sizes and modification times, the image size
    and channels: any change to the folder or to what is asked of it names a new cache."""
    resolved = root.resolve()
    digest = hashlib.sha256(repr((CACHE_FORMAT, str(resolved), size, channels)).encode())
    for file, label in dataset.samples:
        stat = os.stat(file)
        relative = os.path.relpath(file, root)
        digest.update(f"\0{relative}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", resolved.name)[:40] or "folder"
    return f"{name}-{size}px-{channels}c-{digest.hexdigest()[:16]}"


def _open(path: Path, built: bool) -> FolderCache:
    return FolderCache(path, np.load(path / "images.npy", mmap_mode="r"), np.load(path / "labels.npy"), built)


def _build(dataset: torch.utils.data.Dataset, root: Path, path: Path, shape: tuple[int, ...]) -> None:
    """Decode every image of `dataset` into `path` (which must not exist), with progress on stderr."""
    for stale in path.parent.glob(f".{path.name}.partial-*"):  # left by a builder that died: we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    partial = path.parent / f".{path.name}.partial-{os.getpid()}"
    partial.mkdir()
    try:
        images = np.lib.format.open_memmap(partial / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
        _reserve(partial / "images.npy", root)
        labels = np.empty(shape[0], dtype=np.int64)
        # Decoding is the whole job: every CPU decodes, this process only copies. With one CPU or one
        # batch, it decodes alone: a worker would only add a process to start.
        workers = min(runtime.usable_cpus(), math.ceil(shape[0] / BUILD_BATCH))
        workers = workers if workers > 1 else 0
        # Its own generator: a load draws nothing from the global RNG, so a seeded trial initialises its
        # models alike whether it found the cache or made it.
        loader = torch.utils.data.DataLoader(dataset, batch_size=BUILD_BATCH, num_workers=workers,
                                             generator=torch.Generator())
        began = shown = time.monotonic()
        done, step = 0, max(1, shape[0] // 10)
        for x, y in loader:
            images[done:done + len(x)] = x.numpy()
            labels[done:done + len(x)] = y.numpy()
            before, done = done, done + len(x)
            if done // step > before // step or time.monotonic() - shown >= PROGRESS_SECONDS:
                shown = time.monotonic()
                print(f"caching {root} as uint8: {done:,}/{shape[0]:,} images", file=sys.stderr, flush=True)
        images.flush()
        del images
        np.save(partial / "labels.npy", labels)
        (partial / "meta.json").write_text(json.dumps({
            "source": str(root.resolve()), "shape": list(shape), "classes": getattr(dataset, "classes", None),
            "format": CACHE_FORMAT}, indent=1) + "\n")
        partial.rename(path)  # atomic: a reader sees the whole cache or none
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    took = time.monotonic() - began
    print(f"cached {root}: {shape[0]:,} images in {took:.0f} s ({shape[0] / max(took, 1e-9):,.0f} images/s, "
          f"{workers or 'no'} workers) at {path}", file=sys.stderr, flush=True)


def _reserve(file: Path, root: Path) -> None:
    """Allocate the memmap's blocks now: writing to a sparse file on a full disk kills the process
    (SIGBUS) instead of raising."""
    if not hasattr(os, "posix_fallocate"):
        return
    size = file.stat().st_size
    with open(file, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, size)
        except OSError as err:
            raise OSError(err.errno, f"no room for the {size / 1e9:.2f} GB uint8 cache of {root} under "
                          f"{file.parents[1]} ({err.strerror}): free some space there, or point "
                          "GANSWEEP_CACHE at a larger disk") from err
