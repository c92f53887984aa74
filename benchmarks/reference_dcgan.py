"""The reference GAN training loop, written the way pytorch/examples' `dcgan/main.py` trains.

A DataLoader over the images (a TensorDataset in host memory, already scaled to [-1, 1]: the
in-memory form of the example's ToTensor + Normalize((0.5,), (0.5,)) transform, so no per-item
transform is paid), each batch moved with `.to(device)`, a discriminator ending in nn.Sigmoid
trained with nn.BCELoss, Adam with the example's betas, label tensors filled with the real and fake
labels, the D step on real then on fake (fake.detach()), and the G step on the same fakes.
Like the example it reads the losses back with `.item()` every batch (the example prints them),
and it turns cuDNN's autotuner on (`cudnn.benchmark = True`) while its own epochs run. gansweep's
trainer turns it on too unless `deterministic: true` (trainers/runtime.py), so the two loops, which
run in one process, run with the same cuDNN settings.

The models are gansweep's own (trainers.models.gan.build), so both loops train the same
architecture: the example's DCGAN at 64 px, with one block fewer at 32 px and a 7x7 base at 28 px.
Its last layer differs only in form: the example's 4x4 valid convolution to one channel is a
Linear layer over the (ndf*8) x 4 x 4 map here, which computes the same (plus one bias).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

from trainers import runtime
from trainers.models import gan as models

REAL_LABEL = 1.0
FAKE_LABEL = 0.0


class ReferenceGan:
    """G and D built from a resolved gansweep GAN config, trained one epoch at a time."""

    def __init__(self, config: dict[str, Any], images: torch.Tensor, device: torch.device):
        """images: uint8 (N, C, H, W), the same training images gansweep's task trains on."""
        runtime.seed_everything(config["seed"])  # the same seed: the same initial weights as the task
        channels, size = images.shape[1], images.shape[-1]
        generator, discriminator = models.build(config, channels, size, 0)
        self.device, self.nz = device, config["noise_dim"]
        self.netG = generator.to(device)
        self.netD = nn.Sequential(discriminator, nn.Sigmoid()).to(device)
        self.criterion = nn.BCELoss()
        betas = (config["beta1"], 0.999)
        self.optimizerD = optim.Adam(self.netD.parameters(), lr=config["lr"], betas=betas)
        self.optimizerG = optim.Adam(self.netG.parameters(), lr=config["lr"], betas=betas)
        dataset = TensorDataset(images.cpu().float().div(127.5).sub(1.0))
        self.dataloader = DataLoader(dataset, batch_size=config["batch_size"], shuffle=True,
                                     pin_memory=device.type == "cuda")

    def train_epoch(self) -> dict[str, float]:
        """One pass over the DataLoader: the means of the per-batch losses, D(x) and D(G(z)) (named as
        gansweep reports them) and the number of images seen."""
        self.netG.train()
        self.netD.train()
        with cudnn_benchmark():
            rows, images = self._epoch()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        d_loss, g_loss, d_real, d_fake, _ = (sum(column) / len(rows) for column in zip(*rows, strict=True))
        return {"d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake, "images": images}

    def _epoch(self) -> tuple[list[tuple[float, ...]], int]:
        netG, netD, criterion, device = self.netG, self.netD, self.criterion, self.device
        rows, images = [], 0  # per batch, what the example prints: errD, errG, D_x, D_G_z1, D_G_z2
        for data in self.dataloader:
            ############################
            # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
            ###########################
            # train with real
            netD.zero_grad()
            real_cpu = data[0].to(device)
            batch_size = real_cpu.size(0)
            label = torch.full((batch_size,), REAL_LABEL, dtype=real_cpu.dtype, device=device)
            output = netD(real_cpu)
            errD_real = criterion(output, label)
            errD_real.backward()
            D_x = output.mean().item()
            # train with fake
            noise = torch.randn(batch_size, self.nz, device=device)
            fake = netG(noise)
            label.fill_(FAKE_LABEL)
            output = netD(fake.detach())
            errD_fake = criterion(output, label)
            errD_fake.backward()
            D_G_z1 = output.mean().item()
            errD = errD_real + errD_fake
            self.optimizerD.step()
            ############################
            # (2) Update G network: maximize log(D(G(z)))
            ###########################
            netG.zero_grad()
            label.fill_(REAL_LABEL)  # fake labels are real for generator cost
            output = netD(fake)
            errG = criterion(output, label)
            errG.backward()
            D_G_z2 = output.mean().item()
            self.optimizerG.step()
            rows.append((errD.item(), errG.item(), D_x, D_G_z1, D_G_z2))
            images += batch_size
        return rows, images

    @torch.no_grad()
    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """G's images for this noise, in eval mode (to see that training changed G)."""
        self.netG.eval()
        return self.netG(noise.to(self.device)).cpu()


@contextlib.contextmanager
def cudnn_benchmark() -> Iterator[None]:
    """cudnn.benchmark = True, as the example sets it, restored afterwards."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
