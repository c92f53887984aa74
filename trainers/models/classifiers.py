"""Image classifiers: report 000's CNN baseline, LeNet-5, torchvision's AlexNet, ResNet-18 and GoogLeNet
(report 002), and a trained discriminator with a new class head (report 000, section 3.3).

`input: native` adapts the torchvision stems to 16-64 px images (the stem's first downsamplings
removed, as is usual for CIFAR-10); `input: resize224` keeps the ImageNet stems and upsamples every
batch to 224 px inside the model, as report 002 did, at about 49x the compute of 32 px.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers.config import ConfigError, check_choice
from trainers.models.gan import Discriminator

ARCHS = ("cnn", "lenet5", "alexnet", "resnet18", "googlenet")
INPUTS = ("native", "resize224")
HEADS = ("linear", "mlp")
TORCHVISION = ("alexnet", "resnet18", "googlenet")


class Resize(nn.Module):
    """Bilinear upsampling of a batch to size x size pixels (report 002's 224 px inputs)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)


class TransferNet(nn.Module):
    """A discriminator's feature layers (its real/fake head removed) followed by a new class head."""

    def __init__(self, discriminator: Discriminator, num_classes: int, head: str = "linear",
                 head_units: int = 128):
        super().__init__()
        discriminator.head = nn.Identity()
        self.backbone = discriminator.eval()  # eval: measuring the width must not touch BN statistics
        self.image_shape = discriminator.image_shape
        with torch.no_grad():
            width = discriminator.embed(torch.zeros(1, *discriminator.image_shape)).shape[1]
        if head == "linear":
            self.head: nn.Module = nn.Linear(width, num_classes)
        else:
            self.head = nn.Sequential(nn.Linear(width, head_units), nn.ReLU(),
                                      nn.Linear(head_units, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.embed(images))


def build_classifier(arch: str, channels: int, image_size: int, num_classes: int,
                     input: str = "native") -> nn.Module:
    """An untrained classifier of (N, channels, image_size, image_size) images in [-1, 1] -> logits.

    Like the GAN models it carries `image_shape`, the (C, H, W) of the images it takes.
    """
    if arch in TORCHVISION:
        model = _torchvision(arch, channels, num_classes, native=input == "native")
        if input == "native":
            _check_fits(model, channels, image_size, arch)
        else:
            model = nn.Sequential(Resize(224), model)
    else:
        body = _cnn(channels) if arch == "cnn" else _lenet5(channels, image_size)
        model = _with_classifier(body, channels, image_size, arch, num_classes)
    model.image_shape = (channels, image_size, image_size)
    return model


def check_arch(config: dict[str, Any]) -> None:
    """The `arch` and `input` keys of a classifier config (part of its trainer's `resolve`)."""
    check_choice(config, "arch", ARCHS)
    check_choice(config, "input", INPUTS)
    if config["input"] != "native" and config["arch"] not in TORCHVISION:
        raise ConfigError(f"input={config['input']!r} is only for {', '.join(TORCHVISION)}: "
                          f"arch={config['arch']} reads images at their own size (use input=native)",
                          key="input")


def _cnn(channels: int) -> nn.Sequential:
    """Report 000, Table 1: conv32-pool-conv64-pool (3x3 valid convolutions, ReLU)."""
    return nn.Sequential(nn.Conv2d(channels, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())


def _lenet5(channels: int, image_size: int) -> nn.Sequential:
    """LeNet-5 with ReLU and max pooling; 28 px inputs are padded to LeNet's 32 px, as for MNIST."""
    return nn.Sequential(nn.Conv2d(channels, 6, 5, padding=2 if image_size < 32 else 0), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())


def _with_classifier(body: nn.Sequential, channels: int, size: int, arch: str, classes: int) -> nn.Module:
    """body then the dense layers: 128-classes for the CNN (Table 1), 120-84-classes for LeNet-5."""
    width = _check_fits(body, channels, size, arch).shape[1]
    hidden = [128] if arch == "cnn" else [120, 84]
    layers: list[nn.Module] = [body]
    for units in hidden:
        layers += [nn.Linear(width, units), nn.ReLU()]
        width = units
    return nn.Sequential(*layers, nn.Linear(width, classes))


def _torchvision(arch: str, channels: int, classes: int, native: bool) -> nn.Module:
    from torchvision import models
    from torchvision.models.googlenet import BasicConv2d

    if arch == "resnet18":
        model = models.resnet18(weights=None, num_classes=classes)
        if native or channels != 3:
            model.conv1 = nn.Conv2d(channels, 64, *((3, 1, 1) if native else (7, 2, 3)), bias=False)
            nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        if native:
            model.maxpool = nn.Identity()
    elif arch == "alexnet":
        model = models.alexnet(weights=None, num_classes=classes)
        if native or channels != 3:
            model.features[0] = nn.Conv2d(channels, 64, *((3, 1, 1) if native else (11, 4, 2)))
        if native:  # 32 px leaves a 3x3 map, not 6x6: pool to 2x2 instead of copying it up to 36 cells
            model.avgpool = nn.AdaptiveAvgPool2d(2)
            model.classifier[1] = nn.Linear(256 * 2 * 2, 4096)
    else:
        model = models.googlenet(weights=None, num_classes=classes, aux_logits=False, init_weights=True)
        if native or channels != 3:
            model.conv1 = BasicConv2d(channels, 64, kernel_size=3 if native else 7, stride=1 if native else 2,
                                      padding=1 if native else 3)
            nn.init.trunc_normal_(model.conv1.conv.weight, std=0.01, a=-2, b=2)
        if native:
            model.maxpool1 = nn.Identity()
    return model


def _check_fits(model: nn.Module, channels: int, size: int, arch: str) -> torch.Tensor:
    """One dry forward pass: an image too small for the architecture is a config error, not a crash."""
    training = model.training
    try:
        with torch.no_grad():
            return model.eval()(torch.zeros(1, channels, size, size))
    except RuntimeError as err:
        other = " or input=resize224" if arch in TORCHVISION else ""
        raise ConfigError(f"image_size={size} is too small for arch={arch} ({err}); "
                          f"use a larger image_size{other}", key="image_size") from err
    finally:
        model.train(training)
