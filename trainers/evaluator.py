"""The dataset's evaluator network: a small CNN classifier trained once per dataset and cached.

It stands in for Inception (which cannot be downloaded offline, and knows nothing of digits):
its penultimate layer gives the features for FID/KID, its class probabilities the inception
score. Datasets with a single class (a folder of faces) train it to predict image rotation
instead, a self-supervised task whose features still separate good samples from bad.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import nn

from trainers import checkpoint, runtime
from trainers import data as datasets
from trainers.config import cache_root
from trainers.data import ImageData

STEPS = 1000  # Adam steps of batch 64: enough for ~98% on MNIST, seconds on a GPU
SEED = 0
DIGEST_FILE = "evaluator.txt"  # in each checkpoint: the digest of the network that scored the epoch


class EvaluatorNet(nn.Module):
    num_features = 128  # torchmetrics reads this instead of probing the network

    def __init__(self, channels: int, num_outputs: int):
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.features = nn.Sequential(
            *block(channels, 32), nn.MaxPool2d(2), *block(32, 64), nn.MaxPool2d(2),
            *block(64, self.num_features), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(self.num_features, num_outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


class Features(nn.Module):
    """The evaluator seen as a feature extractor (what torchmetrics' FID/KID call)."""

    num_features = EvaluatorNet.num_features

    def __init__(self, net: EvaluatorNet):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(images.float())


class Logits(Features):
    """The evaluator's class logits (what torchmetrics' InceptionScore calls)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.float())


def cache_key(config: dict[str, Any], data: ImageData) -> str:
    source = str(Path(config["data_path"]).expanduser().resolve()) if data.name == "folder" else ""
    parts = [data.name, source, data.channels, data.image_size, config["split_seed"], "cnn3", STEPS, SEED]
    digest = hashlib.sha256(repr(parts).encode()).hexdigest()[:12]
    return f"{data.name}-{data.image_size}px-{digest}"


def cached_path(config: dict[str, Any], data: ImageData) -> Path:
    """Where the evaluator of this dataset is kept (it may not be there yet)."""
    return cache_root() / "evaluators" / f"{cache_key(config, data)}.pt"


def load_or_train(config: dict[str, Any], data: ImageData, device: torch.device) -> tuple[EvaluatorNet, str]:
    """The evaluator for this dataset and the digest of its file: the one a sweep staged for all its
    trials (`config["evaluator"]`, a folder of networks by cache key), else this node's cached one,
    trained first if missing (once per node: locked).

    It is trained on the whole training split, whatever `max_train` a trial uses, with deterministic
    algorithms and a fixed seed, so every trial of a sweep is measured with the same network.
    """
    rotation = data.num_classes < 2
    net = EvaluatorNet(data.channels, 4 if rotation else data.num_classes)
    staged = Path(config["evaluator"]) / f"{cache_key(config, data)}.pt" if config.get("evaluator") else None
    if staged is not None and staged.exists():
        net.load_state_dict(checkpoint.load(staged)["model"])
        return net.to(device).eval().requires_grad_(False), digest(staged.read_bytes())
    path = cached_path(config, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            net.load_state_dict(checkpoint.load(path)["model"])
        else:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                    runtime.deterministic_section():
                torch.manual_seed(SEED)
                if config["max_train"]:
                    data = datasets.load({**config, "max_train": None}, device)
                _train(net.to(device), data, rotation)
            checkpoint.save({"model": net.state_dict()}, path)
    return net.to(device).eval().requires_grad_(False), digest(path.read_bytes())


def digest(saved: bytes) -> str:
    """The first 12 hex digits of a saved network's sha256: which network scored a run."""
    return hashlib.sha256(saved).hexdigest()[:12]


def _rotate(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    turns = torch.randint(0, 4, (len(images),), device=images.device)
    rotated = images.clone()
    for k in (1, 2, 3):
        chosen = turns == k
        rotated[chosen] = torch.rot90(images[chosen], k, dims=(2, 3))
    return rotated, turns


def _train(net: EvaluatorNet, data: ImageData, rotation: bool) -> None:
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=STEPS)
    task = "rotation" if rotation else f"{data.num_classes} classes"
    step = 0
    while step < STEPS:
        net.train()
        for images, labels in data.train.batches(64, shuffle=True, drop_last=True):
            if rotation:
                images, labels = _rotate(images)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(images), labels).backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step % 250 == 0 or step == STEPS:
                print(f"training the evaluator for {data.name} ({task}): step {step}/{STEPS} "
                      f"val_acc {_accuracy(net, data, rotation):.3f}", file=sys.stderr, flush=True)
                net.train()
            if step == STEPS:
                break


@torch.no_grad()
def _accuracy(net: EvaluatorNet, data: ImageData, rotation: bool) -> float:
    net.eval()
    correct = total = 0
    for images, labels in data.val.batches(512, shuffle=False):
        if rotation:
            images, labels = _rotate(images)
        correct += (net(images).argmax(1) == labels).sum().item()
        total += len(labels)
    return correct / max(total, 1)
