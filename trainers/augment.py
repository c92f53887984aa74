"""Extra training images for the `augment` trainer (report 002, Table 1).

`gan`: images from a conditional generator, an equal number per class, with the classes they were
drawn for as labels. `classic`: real training images, randomly rotated and colour-jittered, labels
kept. Either way they are made once, before the first epoch, and join the real training split;
validation and test stay real.
"""

from __future__ import annotations

from typing import Any

import torch

from trainers import sources
from trainers.config import ConfigError
from trainers.data import CHUNK, ImageData, Split, TensorSplit, from_unit_range

MODES = ("none", "gan", "classic")
ROTATION = 15.0  # degrees either way
JITTER = 0.2  # brightness, contrast and saturation factors in [1 - JITTER, 1 + JITTER]


def training_set(config: dict[str, Any], data: ImageData, device: torch.device) -> Split:
    """The real training split plus config['n_extra'] extra images (None: as many as there are real)."""
    real = data.train
    n = len(real) if config["n_extra"] is None else config["n_extra"]
    if config["augment"] == "none" or n == 0:
        return real
    if not isinstance(real, TensorSplit):
        raise ConfigError(f"augment={config['augment']!r} needs a training set held in memory; "
                          f"this {data.name} dataset is streamed from disk (set a smaller image_size)",
                          key="augment")
    if config["augment"] == "gan":
        images, labels = generated(config["generator"], n, data, device)
    else:
        images, labels = classic(real.images, real.labels, n)
    return TensorSplit(torch.cat([real.images, images]), torch.cat([real.labels, labels]))


@torch.no_grad()
def generated(source: str, n: int, data: ImageData, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (uint8, like the real ones) from the conditional generator at `source`, balanced classes."""
    generator = sources.load_gan_model(source, "generator", "generator")
    shape = (data.channels, data.image_size, data.image_size)
    if not generator.num_classes:
        raise ConfigError(f"generator={source!r} is not conditional: it cannot draw images of a given "
                          "class. Train one with conditional=true and use its generator", key="generator")
    if generator.num_classes != data.num_classes or tuple(generator.image_shape) != shape:
        raise ConfigError(
            f"generator={source!r} draws {_shape(generator.image_shape)} images of "
            f"{generator.num_classes} classes, but dataset={data.name!r} has {_shape(shape)} images of "
            f"{data.num_classes} classes: set image_size/channels to match, or use another generator",
            key="generator")
    generator.to(device)
    labels = (torch.arange(n) % data.num_classes)[torch.randperm(n)].to(device)
    images = [from_unit_range(generator(torch.randn(len(part), generator.noise_dim, device=device), part))
              for part in labels.split(CHUNK)]
    return torch.cat(images), labels


def classic(images: torch.Tensor, labels: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n randomly chosen real images (uint8), each rotated and jittered with its own random draw."""
    from torchvision.transforms import v2

    transform = v2.Compose([v2.RandomRotation(ROTATION), v2.ColorJitter(JITTER, JITTER, JITTER)])
    chosen = torch.randint(len(images), (n,)).to(images.device)
    return torch.stack([transform(images[i]) for i in chosen]), labels[chosen]


def _shape(shape) -> str:
    return "x".join(map(str, shape))
