"""GAN trainers (MLP GAN of seed 000, DCGAN family of seeds 001-004): one loop, swappable losses."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torchvision.utils import save_image

from trainers import data as datasets
from trainers import evaluator, loop, losses, optim, runtime
from trainers.config import ConfigError, check_choice, check_flag, check_positive, check_range, merge
from trainers.loop import Report
from trainers.metrics import SampleQuality, real_fake_scores
from trainers.models import gan as models

COMMON_DEFAULTS: dict[str, Any] = {
    **datasets.DEFAULTS,
    # model
    "noise_dim": 100,
    "g_activation": "relu",  # relu | leaky_relu | prelu | elu
    "d_activation": "leaky_relu",
    "activation": None,  # sets both G's and D's activation (seed 000's study)
    "leaky_slope": 0.2,
    "d_norm": None,  # batch | layer | instance | none (None: layer for wgan-gp, else batch)
    "spectral_norm": False,
    "d_dropout": 0.0,
    "conditional": False,
    "embed_dim": 50,
    # loss and stabilisers
    "loss": "bce",  # bce | lsgan | wgan-gp | hinge
    "n_critic": None,  # D steps per G step (None: 5 for wgan-gp, else 1)
    "gp_weight": 10.0,
    "label_smoothing": 0.0,  # one-sided: real target 1 - s
    "instance_noise": 0.0,  # std of Gaussian noise on D's inputs, decays linearly to 0
    "instance_noise_epochs": None,  # epochs over which it decays (None: all)
    # optimisation
    "optimizer": "adam",  # adam | adamax | nadam | amsgrad | rmsprop | sgd
    "lr": 2e-4,
    "lr_g": None,
    "lr_d": None,
    "beta1": 0.5,
    "beta2": 0.999,
    "weight_decay": 0.0,
    "batch_size": 64,
    "epochs": 10,
    # evaluation
    "eval_samples": 1000,  # generated images per epoch for fid/kid/inception_score/d_f1
    "standard_fid": False,  # also compute FID with the standard Inception weights (if present locally)
    "sample_grid": 64,
    **runtime.DEFAULTS,
}

DCGAN_DEFAULTS: dict[str, Any] = {**COMMON_DEFAULTS, "arch": "dcgan", "ngf": 64, "ndf": 64}
MLP_DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    "arch": "mlp",
    "noise_dim": 64,
    "hidden": [256, 512, 1024],  # G's widths; D uses them reversed
    "d_norm": "none",
    "d_dropout": 0.3,
    "batch_size": 256,
    "lr": 1e-4,
    "beta1": 0.9,
}

METRICS: tuple[str, ...] = (
    "g_loss", "d_loss", "d_real", "d_fake", "d_acc", "d_f1",
    "fid", "kid", "inception_score", "epoch_time_s", "images_per_s",
)

CHECK_EVERY = 25  # steps between NaN checks (each check waits for the GPU)


def train_dcgan(config: dict[str, Any], report: Report) -> None:
    loop.run(GanTask(resolve("dcgan", config)), config, report)


def train_mlp(config: dict[str, Any], report: Report) -> None:
    loop.run(GanTask(resolve("gan", config)), config, report)


def resolve(trainer: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults + overrides, validated: every bad value fails here, before any data or model.

    Also fills the defaults that depend on the loss (`n_critic`, `d_norm`), so what is built from
    the result needs no checks and no rules of its own.
    """
    defaults = DCGAN_DEFAULTS if trainer == "dcgan" else MLP_DEFAULTS
    config = merge(defaults, overrides, trainer)
    datasets.check(config)
    runtime.check(config)
    check_choice(config, "arch", [defaults["arch"]])  # each trainer builds one architecture
    check_choice(config, "loss", losses.LOSSES)
    check_choice(config, "optimizer", optim.OPTIMIZERS)
    for key in ("g_activation", "d_activation", "activation"):
        if config[key] is not None:
            check_choice(config, key, models.ACTIVATIONS)
    check_positive(config, "lr", "lr_g", "lr_d", "batch_size", "epochs", "noise_dim", "eval_samples",
                   "gp_weight", "sample_grid", "n_critic", "embed_dim", "instance_noise_epochs")
    check_range(config, "beta1", 0.0, 0.999)
    check_range(config, "beta2", 0.0, 0.9999)
    check_range(config, "weight_decay", 0.0, 1.0)
    check_range(config, "leaky_slope", 0.0, 1.0)
    check_range(config, "label_smoothing", 0.0, 0.5)
    check_range(config, "d_dropout", 0.0, 0.95)
    check_range(config, "instance_noise", 0.0, 10.0)
    check_flag(config, "spectral_norm", "conditional", "standard_fid")
    _check_loss_options(config, defaults)
    _check_architecture(config)
    return _derive(config)


def _check_loss_options(config: dict[str, Any], defaults: dict[str, Any]) -> None:
    """An option the chosen loss does not read (label smoothing for hinge, ...) is an error, not a no-op."""
    loss = losses.CLASSES[config["loss"]]
    for key in ("label_smoothing", "gp_weight"):
        if config[key] != defaults[key] and key not in loss.options:
            users = [name for name, cls in losses.CLASSES.items() if key in cls.options]
            raise ConfigError(f"{key}={config[key]!r} has no effect with loss={config['loss']!r}: only "
                              f"{' and '.join(users)} use it. Remove {key}, or set it only for those "
                              "losses (a param with `when: {loss: ...}`)", key=key)


def _check_architecture(config: dict[str, Any]) -> None:
    if config["arch"] == "mlp":
        hidden = config["hidden"]
        if not isinstance(hidden, (list, tuple)) or not hidden or not all(
                isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in hidden):
            raise ConfigError(f"hidden={hidden!r} must be a list of layer widths, e.g. [256, 512, 1024]",
                              key="hidden")
        if config["d_norm"] not in (None, "none"):
            raise ConfigError(f"d_norm={config['d_norm']!r}: the MLP discriminator has no normalisation "
                              "layers; use the dcgan trainer to compare them", key="d_norm")
        return
    check_positive(config, "ngf", "ndf")
    if config["d_norm"] is not None:
        check_choice(config, "d_norm", models.NORMS)
    if config["d_norm"] == "batch" and config["loss"] == "wgan-gp":
        raise ConfigError("d_norm='batch' with loss='wgan-gp': the gradient penalty is taken per image, "
                          "and batch norm makes each critic score depend on the whole batch (Gulrajani "
                          "et al., section 4: no batch norm in the critic). Use d_norm: layer, instance "
                          "or none", key="d_norm")
    size = config["image_size"]
    if size is not None and size not in models.DCGAN_SIZES:
        raise ConfigError(f"image_size={size} cannot be produced by the DCGAN; "
                          f"use one of {models.DCGAN_SIZES}", key="image_size")


def _derive(config: dict[str, Any]) -> dict[str, Any]:
    """The defaults that follow the loss: WGAN-GP takes 5 critic steps per G step and a critic
    without batch norm (layer norm, as the paper suggests); the other losses 1 step and batch norm."""
    wgan = config["loss"] == "wgan-gp"
    if config["n_critic"] is None:
        config["n_critic"] = losses.CLASSES[config["loss"]].default_n_critic
    if config["d_norm"] is None:
        config["d_norm"] = "none" if config["arch"] == "mlp" else "layer" if wgan else "batch"
    return config


def export_models(trainer: str, config: dict[str, Any], state: dict[str, Any]) -> dict[str, torch.nn.Module]:
    """The generator and discriminator of a checkpoint's `task` state, ready to save as models.

    The models are rebuilt as they were trained, so rules added since (a checkpoint's config is
    complete) do not apply: only the defaults are filled in.
    """
    defaults = DCGAN_DEFAULTS if trainer == "dcgan" else MLP_DEFAULTS
    config = _derive(merge(defaults, {k: v for k, v in config.items() if k != "resume_from"}, trainer))
    channels, size, classes = state["shape"]
    generator, discriminator = models.build(config, channels, size, classes)
    generator.load_state_dict(state["generator"])
    discriminator.load_state_dict(state["discriminator"])
    return {"generator": generator.eval(), "discriminator": discriminator.eval()}


class GanTask:
    """One GAN training run: the D step then the G step, as in pytorch/examples' dcgan."""

    def __init__(self, config: dict[str, Any]):
        self.config, self.epochs = config, config["epochs"]
        self.device = runtime.device(config["device"])
        self.autocast = runtime.autocast(config, self.device)
        runtime.seed_everything(config["seed"])
        self.data = datasets.load(config, self.device)
        if len(self.data.train) < config["batch_size"]:
            raise ConfigError(f"batch_size={config['batch_size']} is larger than the training set "
                              f"({len(self.data.train)} images)", key="batch_size")
        self.generator, self.discriminator = (
            m.to(self.device) for m in models.build(config, self.data.channels, self.data.image_size,
                                                    self.data.num_classes))
        if config["channels_last"]:
            self.generator.to(memory_format=torch.channels_last)
            self.discriminator.to(memory_format=torch.channels_last)
        self.loss = losses.build(config["loss"], config["label_smoothing"], config["gp_weight"])
        self.n_critic = config["n_critic"]
        opt = {k: config[k] for k in ("beta1", "beta2", "weight_decay")}
        self.opt_g = optim.build(config["optimizer"], self.generator.parameters(),
                                 config["lr_g"] or config["lr"], **opt)
        self.opt_d = optim.build(config["optimizer"], self.discriminator.parameters(),
                                 config["lr_d"] or config["lr"], **opt)
        self.conditional = config["conditional"]

        net = evaluator.load_or_train(config, self.data, self.device)
        self.real_eval, self.real_eval_labels = self.data.val.take(config["eval_samples"])
        self.quality = SampleQuality(net, self.real_eval, config["standard_fid"])
        fixed = torch.Generator().manual_seed(config["seed"])
        self.fixed_noise = torch.randn(config["sample_grid"], config["noise_dim"], generator=fixed)
        self.fixed_labels = torch.arange(config["sample_grid"]) % self.data.num_classes

    # -- training ---------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        G, D, loss = self.generator, self.discriminator, self.loss
        G.train()
        D.train()
        noise_std = self._instance_noise(epoch)
        sums = torch.zeros(4, device=self.device)  # g_loss, d_loss, d_real, d_fake
        d_steps = g_steps = images = 0
        began = time.perf_counter()
        for step, (real, labels) in enumerate(
                self.data.train.batches(self.config["batch_size"], shuffle=True, drop_last=True), 1):
            labels = labels if self.conditional else None
            if self.config["channels_last"]:
                real = real.contiguous(memory_format=torch.channels_last)
            with self.autocast:
                fake = G(self._noise(len(real)), labels)
                real_scores = D(self._noisy(real, noise_std), labels).float()
                fake_scores = D(self._noisy(fake.detach(), noise_std), labels).float()
                d_loss = loss.d_loss(real_scores, fake_scores)
            penalty = loss.penalty(D, real, fake.detach().float(), labels)
            if penalty is not None:
                d_loss = d_loss + penalty
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            sums[1:] += torch.stack([d_loss.detach(), loss.output(real_scores.detach()).mean(),
                                     loss.output(fake_scores.detach()).mean()])
            d_steps += 1
            images += len(real)

            if step % self.n_critic == 0:
                D.requires_grad_(False)  # G's step needs gradients through D, not for D's weights
                with self.autocast:
                    fake = G(self._noise(len(real)), labels)
                    g_loss = loss.g_loss(D(self._noisy(fake, noise_std), labels).float())
                self.opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                self.opt_g.step()
                D.requires_grad_(True)
                sums[0] += g_loss.detach()
                g_steps += 1
            if step % CHECK_EVERY == 0:
                loop.check_finite(self._means(sums, g_steps, d_steps), epoch, step)
        seconds = time.perf_counter() - began
        metrics = self._means(sums, g_steps, d_steps)
        loop.check_finite(metrics, epoch)
        metrics["images_per_s"] = images / seconds
        return metrics

    def _means(self, sums: torch.Tensor, g_steps: int, d_steps: int) -> dict[str, float]:
        g, d, real, fake = sums.tolist()
        return {"g_loss": g / max(g_steps, 1), "d_loss": d / max(d_steps, 1),
                "d_real": real / max(d_steps, 1), "d_fake": fake / max(d_steps, 1)}

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.config["noise_dim"], device=self.device)

    def _instance_noise(self, epoch: int) -> float:
        """Seed 001's instance noise: its std falls linearly to 0 over instance_noise_epochs."""
        span = self.config["instance_noise_epochs"] or self.epochs
        return self.config["instance_noise"] * max(0.0, 1.0 - (epoch - 1) / span)

    @staticmethod
    def _noisy(images: torch.Tensor, std: float) -> torch.Tensor:
        return images + std * torch.randn_like(images) if std > 0 else images

    # -- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, n: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.generator.eval()
        if self.conditional and labels is None:
            labels = torch.randint(0, self.data.num_classes, (n,), device=self.device)
        chunks = []
        for start in range(0, n, 500):
            part = None if labels is None else labels[start:start + 500].to(self.device)
            chunks.append(self.generator(self._noise(min(500, n - start)), part).float())
        return torch.cat(chunks)

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict[str, float]:
        n = len(self.real_eval)
        fake_labels = (torch.randint(0, self.data.num_classes, (n,), device=self.device)
                       if self.conditional else None)
        fake = self.generate(n, fake_labels)
        metrics = self.quality(fake)
        real_scores = self._scores(self.real_eval, self.real_eval_labels)
        metrics.update(real_fake_scores(real_scores, self._scores(fake, fake_labels), self.loss.threshold))
        return metrics

    def _scores(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """D's scores on held-out images, in chunks of the training batch size."""
        labels = labels if self.conditional else None
        size = self.config["batch_size"]
        with models.batch_statistics(self.discriminator) as D:
            return torch.cat([D(images[i:i + size], None if labels is None else labels[i:i + size]).float()
                              for i in range(0, len(images), size)])

    def write_artifacts(self, directory: Path, epoch: int) -> None:
        labels = self.fixed_labels if self.conditional else None
        with torch.no_grad():
            self.generator.eval()
            samples = self.generator(self.fixed_noise.to(self.device),
                                     None if labels is None else labels.to(self.device))
        nrow = self.data.num_classes if self.conditional else 8
        save_image(samples.float(), directory / "samples.png", nrow=nrow, normalize=True,
                   value_range=(-1, 1))

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "shape": [self.data.channels, self.data.image_size, self.data.num_classes],
            "config": json.dumps(self.config, default=_plain),  # rebuilds the models (transfer source)
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        # The config's rates win over the checkpoint's: PBT resumes a copied checkpoint with new ones.
        for opt, key in ((self.opt_g, "lr_g"), (self.opt_d, "lr_d")):
            for group in opt.param_groups:
                group["lr"] = self.config[key] or self.config["lr"]


def _plain(value: Any) -> Any:
    """numpy scalars (a sweep's sampled values) as Python numbers, so the config stays JSON."""
    return value.item() if hasattr(value, "item") else str(value)
