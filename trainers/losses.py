"""Adversarial losses as swappable parts of the one GAN loop.

Each loss turns discriminator scores into D's and G's losses; WGAN-GP adds a gradient penalty
that needs the discriminator itself. `threshold` is the score above which D calls an image real
(used for d_acc / d_f1); None means "midway between the mean real and mean fake score", the only
sensible cut for a critic whose scores have no fixed scale. `options` are the config keys a loss
reads besides its name: the trainer's `resolve` refuses the others when set, since they would do nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class GanLoss:
    threshold: float | None = 0.0
    default_n_critic = 1
    options: tuple[str, ...] = ()

    def __init__(self, label_smoothing: float = 0.0, gp_weight: float = 10.0):
        self.real_target = 1.0 - label_smoothing  # one-sided: fakes stay at 0
        self.gp_weight = gp_weight

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def output(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores as reported in d_real / d_fake: probabilities for bce, raw values otherwise."""
        return scores

    def penalty(self, discriminator, real: torch.Tensor, fake: torch.Tensor,
                labels: torch.Tensor | None) -> torch.Tensor | None:
        return None


class NonSaturating(GanLoss):
    """Goodfellow's BCE loss, with G maximising log D(G(z)) (the non-saturating form)."""

    options = ("label_smoothing",)

    def d_loss(self, real, fake):
        return (F.binary_cross_entropy_with_logits(real, torch.full_like(real, self.real_target))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))

    def g_loss(self, fake):
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))

    def output(self, scores):
        return torch.sigmoid(scores)


class LeastSquares(GanLoss):
    """LSGAN (Mao et al.): squared distance to the targets 1 (real) and 0 (fake)."""

    threshold = 0.5
    options = ("label_smoothing",)

    def d_loss(self, real, fake):
        return 0.5 * ((real - self.real_target).pow(2).mean() + fake.pow(2).mean())

    def g_loss(self, fake):
        return 0.5 * (fake - 1.0).pow(2).mean()


class Hinge(GanLoss):
    def d_loss(self, real, fake):
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()

    def g_loss(self, fake):
        return -fake.mean()


class WassersteinGP(GanLoss):
    """WGAN-GP (Gulrajani et al.): critic difference + gradient penalty on interpolates.

    The penalty's double backward stays eager (torch.compile does not support it).
    """

    threshold = None
    default_n_critic = 5
    options = ("gp_weight",)

    def d_loss(self, real, fake):
        return fake.mean() - real.mean()

    def g_loss(self, fake):
        return -fake.mean()

    def penalty(self, discriminator, real, fake, labels):
        alpha = torch.rand(real.shape[0], *([1] * (real.ndim - 1)), device=real.device)
        mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        scores = discriminator(mixed, labels)
        (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
        return self.gp_weight * (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


CLASSES: dict[str, type[GanLoss]] = {"bce": NonSaturating, "lsgan": LeastSquares,
                                     "wgan-gp": WassersteinGP, "hinge": Hinge}
LOSSES = tuple(CLASSES)


def build(name: str, label_smoothing: float = 0.0, gp_weight: float = 10.0) -> GanLoss:
    return CLASSES[name](label_smoothing, gp_weight)
