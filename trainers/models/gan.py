"""Generators and discriminators: the MLP GAN of report 000 and the DCGAN family (28-128 px).

Discriminators are split into `features` (everything up to the real/fake output) and `head`
(the real/fake output), so transfer learning can swap the head for a classifier.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

ACTIVATIONS = ("relu", "leaky_relu", "prelu", "elu")
NORMS = ("batch", "layer", "instance", "none")
DCGAN_SIZES = (28, 32, 64, 128)


def activation(name: str, slope: float = 0.2, channels: int = 1) -> nn.Module:
    return {
        "relu": lambda: nn.ReLU(inplace=True),
        "leaky_relu": lambda: nn.LeakyReLU(slope, inplace=True),
        "prelu": lambda: nn.PReLU(channels),
        "elu": lambda: nn.ELU(inplace=True),
    }[name]()


def norm2d(name: str, channels: int) -> nn.Module:
    return {
        "batch": lambda: nn.BatchNorm2d(channels),
        "layer": lambda: nn.GroupNorm(1, channels),  # normalises over C, H, W per sample
        "instance": lambda: nn.InstanceNorm2d(channels, affine=True),
        "none": nn.Identity,
    }[name]()


class Conditioner(nn.Module):
    """Class labels as a learned embedding (G) or as an extra image channel (D)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, dim)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embed(labels)


class Generator(nn.Module):
    """noise (N, noise_dim) [+ labels] -> images (N, C, H, W) in [-1, 1]."""

    def __init__(self, body: nn.Module, noise_dim: int, image_shape: tuple[int, int, int],
                 num_classes: int = 0, embed_dim: int = 0, conv_input: bool = True):
        super().__init__()
        self.body, self.noise_dim, self.image_shape = body, noise_dim, image_shape
        self.num_classes, self.conv_input = num_classes, conv_input
        self.condition = Conditioner(num_classes, embed_dim) if num_classes else None

    def forward(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.condition is not None:
            if labels is None:
                raise ValueError("this generator is conditional: pass class labels")
            noise = torch.cat([noise, self.condition(labels)], dim=1)
        if self.conv_input:
            noise = noise[:, :, None, None]
        return self.body(noise).view(-1, *self.image_shape)


class Discriminator(nn.Module):
    """images [+ labels] -> one score per image (a logit for bce, a critic value for wgan-gp)."""

    def __init__(self, features: nn.Module, head: nn.Module, image_shape: tuple[int, int, int],
                 num_classes: int = 0, flatten_input: bool = False):
        super().__init__()
        self.features, self.head, self.image_shape = features, head, image_shape
        self.num_classes, self.flatten_input = num_classes, flatten_input
        pixels = math.prod(image_shape[1:])
        self.condition = Conditioner(num_classes, pixels) if num_classes else None

    def embed(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Flattened features before the real/fake head."""
        if self.condition is not None:
            if labels is None:
                raise ValueError("this discriminator is conditional: pass class labels")
            label_map = self.condition(labels).view(-1, 1, *self.image_shape[1:])
            images = torch.cat([images, label_map], dim=1)
        if self.flatten_input:
            images = images.flatten(1)
        return self.features(images).flatten(1)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.embed(images, labels)).view(-1)


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Score with batch-norm on batch statistics, as D is trained, leaving running stats untouched.

    A DCGAN discriminator only ever sees all-real or all-fake batches; its running averages
    mix the two and make eval-mode scores meaningless. Dropout is off while scoring.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.train()
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        yield model
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


def build(config: dict[str, Any], channels: int, image_size: int, num_classes: int
          ) -> tuple[Generator, Discriminator]:
    """G and D for images of this shape, from a config resolved by the gan/dcgan trainer."""
    classes = num_classes if config["conditional"] else 0
    shape = (channels, image_size, image_size)
    g_act = config["activation"] or config["g_activation"]
    d_act = config["activation"] or config["d_activation"]
    maker = _mlp if config["arch"] == "mlp" else _dcgan
    return maker(config, shape, classes, g_act, d_act)


def _mlp(config, shape, classes, g_act, d_act):
    """The MLP GAN of report 000, section 3.1 (hidden [256, 512, 1024]: G 64 -> 256 -> 512 -> 1024 -> 784)."""
    widths = list(config["hidden"])
    slope, sn = config["leaky_slope"], config["spectral_norm"]
    pixels = math.prod(shape)

    # -- generator: noise -> hidden widths -> pixels
    # input is Z (+ the label embedding): noise_dim (+ embed_dim)
    width_in = config["noise_dim"] + (config["embed_dim"] if classes else 0)
    g_layers: list[nn.Module] = []
    for width in widths:
        g_layers += [nn.Linear(width_in, width), activation(g_act, slope, width)]
        width_in = width  # state size. width
    g_layers += [nn.Linear(width_in, pixels), nn.Tanh()]
    # state size. C*H*W in [-1, 1], viewed as C x H x W by Generator
    generator = Generator(nn.Sequential(*g_layers), config["noise_dim"], shape, classes,
                          config["embed_dim"], conv_input=False)

    # -- discriminator: pixels -> the hidden widths reversed -> one score
    # input is the flattened image (+ the label channel): C*H*W (+ H*W)
    width_in = pixels + (shape[1] * shape[2] if classes else 0)
    d_layers: list[nn.Module] = []
    for width in reversed(widths):
        linear = nn.Linear(width_in, width)
        d_layers += [spectral_norm(linear) if sn else linear, activation(d_act, slope, width),
                     nn.Dropout(config["d_dropout"])]
        width_in = width  # state size. width
    head = nn.Linear(width_in, 1)  # state size. 1: the score
    discriminator = Discriminator(nn.Sequential(*d_layers), spectral_norm(head) if sn else head,
                                  shape, classes, flatten_input=True)
    return generator, discriminator


def _dcgan(config, shape, classes, g_act, d_act):
    """The DCGAN (Radford et al.) at 28-128 px. At 64 px it is pytorch/examples' dcgan:

        G: Z -> (ngf*8) x 4 x 4 -> (ngf*4) x 8 x 8 -> (ngf*2) x 16 x 16 -> ngf x 32 x 32 -> nc x 64 x 64
        D: nc x 64 x 64 -> ndf x 32 x 32 -> (ndf*2) x 16 x 16 -> (ndf*4) x 8 x 8 -> (ndf*8) x 4 x 4 -> 1

    Other sizes start from a base x base map (4 px, or 7 px for 28 px images) and take
    log2(size / base) doublings: one block fewer at 32 px, one more at 128 px.
    """
    channels, size = shape[0], shape[1]
    base = 7 if size == 28 else 4
    n_up = int(math.log2(size // base))  # 64 px: 4 blocks
    slope, sn = config["leaky_slope"], config["spectral_norm"]
    ngf, ndf = config["ngf"], config["ndf"]

    # -- generator: each block doubles the side and halves the channels
    width = ngf * 2 ** (n_up - 1)  # 64 px: ngf*8
    noise_in = config["noise_dim"] + (config["embed_dim"] if classes else 0)
    g_layers: list[nn.Module] = [
        # input is Z (+ the label embedding), going into a convolution: noise_in x 1 x 1
        nn.ConvTranspose2d(noise_in, width, base, 1, 0, bias=False),
        nn.BatchNorm2d(width), activation(g_act, slope, width),
        # state size. width x base x base: (ngf*8) x 4 x 4 at 64 px
    ]
    for _ in range(n_up - 1):
        g_layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                     nn.BatchNorm2d(width // 2), activation(g_act, slope, width // 2)]
        width //= 2
        # state size. width x (2 * side) x (2 * side): (ngf*4) x 8 x 8, (ngf*2) x 16 x 16, ngf x 32 x 32
    g_layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
    # state size. nc x size x size, in [-1, 1]
    generator = Generator(nn.Sequential(*g_layers), config["noise_dim"], shape, classes,
                          config["embed_dim"])

    # -- discriminator: each block halves the side and doubles the channels
    def conv(c_in: int, c_out: int) -> nn.Module:  # 4x4, stride 2, pad 1; no bias before batch norm
        layer = nn.Conv2d(c_in, c_out, 4, 2, 1, bias=config["d_norm"] != "batch")
        return spectral_norm(layer) if sn else layer

    # input is nc (+ 1 label channel) x size x size; no normalisation on the first layer (DCGAN paper)
    d_layers: list[nn.Module] = [conv(channels + (1 if classes else 0), ndf),
                                 activation(d_act, slope, ndf), nn.Dropout2d(config["d_dropout"])]
    width = ndf
    # state size. ndf x (size / 2) x (size / 2): ndf x 32 x 32 at 64 px
    for _ in range(n_up - 1):
        d_layers += [conv(width, width * 2), norm2d(config["d_norm"], width * 2),
                     activation(d_act, slope, width * 2), nn.Dropout2d(config["d_dropout"])]
        width *= 2
        # state size. width x (side / 2) x (side / 2): (ndf*2) x 16 x 16, (ndf*4) x 8 x 8, (ndf*8) x 4 x 4
    head = nn.Linear(width * base * base, 1)  # (ndf*8) x base x base -> 1: the score
    discriminator = Discriminator(nn.Sequential(*d_layers), spectral_norm(head) if sn else head, shape,
                                  classes)
    for model in (generator, discriminator):
        model.apply(_dcgan_init)
    return generator, discriminator


def _dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) weights as in the DCGAN paper (skipped for spectral-normalised layers)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and hasattr(module, "weight") and \
            not hasattr(module, "parametrizations"):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
