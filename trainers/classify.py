"""Classifier trainers: `classifier` (report 000's CNN baseline, LeNet-5, torchvision nets), `transfer`
(a trained discriminator with a new class head, report 000 section 3.3) and `augment` (a classifier on
the real training images plus generated or classically augmented ones, report 002 Table 1).

Each trainer builds its data, model and training set and hands them to the one ClassifyTask. A model
with a `backbone` (a discriminator with a new head) keeps it frozen for the first `freeze_epochs`
epochs: no gradients, and in eval mode so its batch-norm statistics stay those it was trained with.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers import augment, loop, optim, plots, runtime, sources
from trainers import data as datasets
from trainers.catalog import TrainerSpec
from trainers.config import ConfigError, check_choice, check_positive, check_range, check_whole, merge
from trainers.data import ImageData, Split
from trainers.loop import Report
from trainers.models import classifiers

METRICS: tuple[str, ...] = ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "epoch_time_s")
SCHEDULES = ("none", "cosine", "step")

OPTIMISATION: dict[str, Any] = {
    "optimizer": "adam",  # adam | adamax | nadam | amsgrad | rmsprop | sgd
    "lr": 1e-3,
    "beta1": 0.9,
    "beta2": 0.999,
    "weight_decay": 0.0,
    "batch_size": 64,
    "epochs": 10,
    "lr_schedule": "none",  # none | cosine | step (x0.1 at 1/2 and 3/4 of the epochs); set per epoch
}
ARCH: dict[str, Any] = {
    "arch": "cnn",  # cnn | lenet5 | alexnet | resnet18 | googlenet
    "input": "native",  # native (stems adapted to small images) | resize224 (report 002's way, ~49x compute)
}
CLASSIFIER_DEFAULTS: dict[str, Any] = {**datasets.DEFAULTS, **ARCH, **OPTIMISATION, **runtime.DEFAULTS}
TRANSFER_DEFAULTS: dict[str, Any] = {
    **datasets.DEFAULTS,
    "source": None,  # the discriminator: runs:/<run_id>/discriminator, models:/<name>@<alias>, or a
    #                  gan/dcgan checkpoint directory (.../checkpoints/epoch_NNN)
    "head": "linear",  # linear (dense to the classes) | mlp (dense head_units, ReLU, dense to the classes)
    "head_units": 128,
    "freeze_epochs": 3,  # epochs that train the head only; then everything trains
    "finetune_lr": None,  # the learning rate once everything trains (None: lr)
    **OPTIMISATION,
    **runtime.DEFAULTS,
}
AUGMENT_DEFAULTS: dict[str, Any] = {
    **CLASSIFIER_DEFAULTS,
    "augment": "none",  # none | gan | classic (random rotation and colour jitter)
    "n_extra": None,  # extra training images (None: as many as the real ones, as in report 002)
    "generator": None,  # augment=gan: a conditional generator, runs:/<run_id>/generator or models:/...
    "lr": 2e-4,  # report 002: Adam, lr 2e-4, for every classifier
}
DEFAULTS = {"classifier": CLASSIFIER_DEFAULTS, "transfer": TRANSFER_DEFAULTS, "augment": AUGMENT_DEFAULTS}

Shape = tuple[int, int, int]  # channels, image size, classes


# -- the three trainers ------------------------------------------------------------------------------
def train_classifier(config: dict[str, Any], report: Report) -> None:
    """A classifier trained from scratch on the real training images."""
    config = resolve("classifier", config)
    data, device = _load(config)
    model = classifier_model(config, _shape(data))
    loop.run(ClassifyTask(config, data, device, model, data.train), config, report)


def train_transfer(config: dict[str, Any], report: Report) -> None:
    """A trained discriminator with a new class head: the head alone first, then everything."""
    config = resolve("transfer", config)
    data, device = _load(config)
    model = transfer_model(config, _shape(data))
    loop.run(ClassifyTask(config, data, device, model, data.train), config, report)


def train_augment(config: dict[str, Any], report: Report) -> None:
    """A classifier trained on the real images plus n_extra generated or classically augmented ones."""
    config = resolve("augment", config)
    data, device = _load(config)
    model = classifier_model(config, _shape(data))
    train_set = augment.training_set(config, data, device)
    loop.run(ClassifyTask(config, data, device, model, train_set), config, report)


def _load(config: dict[str, Any]) -> tuple[ImageData, torch.device]:
    device = runtime.setup(config)
    runtime.seed_everything(config["seed"])
    return datasets.load(config, device), device


def _shape(data: ImageData) -> Shape:
    return data.channels, data.image_size, data.num_classes


# -- config -------------------------------------------------------------------------------------------
def resolve(trainer: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults + overrides, validated: every bad value fails here, before any data or model."""
    config = merge(DEFAULTS[trainer], overrides, trainer)
    datasets.check(config)
    runtime.check(config)
    check_choice(config, "optimizer", optim.OPTIMIZERS)
    check_choice(config, "lr_schedule", SCHEDULES)
    check_positive(config, "lr", "batch_size", "epochs")
    check_range(config, "beta1", 0.0, 0.999)
    check_range(config, "beta2", 0.0, 0.9999)
    check_range(config, "weight_decay", 0.0, 1.0)
    if trainer == "transfer":
        _check_transfer(config)
    else:
        classifiers.check_arch(config)
    if trainer == "augment":
        check_choice(config, "augment", augment.MODES)
        check_whole(config, "n_extra")
        if config["augment"] == "gan" and not config["generator"]:
            raise ConfigError("augment=gan needs generator: the MLflow model URI of a conditional generator "
                              "(runs:/<run_id>/generator of a dcgan run with conditional=true)",
                              key="generator")
    return config


def _check_transfer(config: dict[str, Any]) -> None:
    check_choice(config, "head", classifiers.HEADS)
    check_positive(config, "head_units", "finetune_lr")
    check_whole(config, "freeze_epochs")
    if not config["source"]:
        raise ConfigError("transfer needs source: the discriminator to start from, as an MLflow model URI "
                          "(runs:/<run_id>/discriminator) or a dcgan checkpoint (.../checkpoints/epoch_NNN)",
                          key="source")
    freeze, epochs = config["freeze_epochs"], config["epochs"]
    if freeze > epochs:
        raise ConfigError(f"freeze_epochs={freeze} is larger than epochs={epochs}: the backbone would "
                          f"never be unfrozen. Use freeze_epochs={epochs} to train the head only",
                          key="freeze_epochs")


# -- models -------------------------------------------------------------------------------------------
def classifier_model(config: dict[str, Any], shape: Shape) -> nn.Module:
    """The untrained classifier named by config['arch']."""
    channels, size, classes = shape
    return classifiers.build_classifier(config["arch"], channels, size, classes, config["input"])


def transfer_model(config: dict[str, Any], shape: Shape) -> nn.Module:
    """The source discriminator with a new class head; ConfigError if it cannot read these images."""
    channels, size, classes = shape
    source = config["source"]
    discriminator = sources.load_gan_model(source, "discriminator", "source")
    wanted = (channels, size, size)
    if tuple(discriminator.image_shape) != wanted:
        have = "x".join(map(str, discriminator.image_shape))
        raise ConfigError(
            f"source={source!r} is a discriminator of {have} images (channels x size x size), but "
            f"dataset={config['dataset']!r} gives {'x'.join(map(str, wanted))} images: set "
            f"channels={discriminator.image_shape[0]} and image_size={discriminator.image_shape[1]}, "
            "or use a discriminator trained at this size", key="source")
    if discriminator.num_classes:
        raise ConfigError(f"source={source!r} is a conditional discriminator: it needs each image's class "
                          "as an input, which a classifier cannot give it. Use an unconditional GAN's",
                          key="source")
    return classifiers.TransferNet(discriminator, classes, config["head"], config["head_units"])


def export(trainer: str, config: dict[str, Any], state: dict[str, Any]) -> dict[str, nn.Module]:
    """The trained classifier of a checkpoint's `task` state (transfer reloads its source's architecture)."""
    config = resolve(trainer, {k: v for k, v in config.items() if k != "resume_from"})
    build = transfer_model if trainer == "transfer" else classifier_model
    model = build(config, tuple(state["shape"]))
    model.load_state_dict(state["model"])
    return {"classifier": model.eval()}


# -- the shared task ------------------------------------------------------------------------------------
def learning_rate(config: dict[str, Any], epoch: int) -> float:
    """lr (finetune_lr once the backbone is unfrozen, if set) times the schedule's factor."""
    finetune = config.get("finetune_lr")
    base = finetune if finetune and epoch > config.get("freeze_epochs", 0) else config["lr"]
    schedule, progress = config["lr_schedule"], (epoch - 1) / config["epochs"]
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "step":  # x0.1 after half and after three quarters of the epochs
        return base * 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    return base


class ClassifyTask:
    """Cross-entropy training; val_loss/val_acc every epoch, test_acc after the last one (a `loop.Task`)."""

    def __init__(self, config: dict[str, Any], data: ImageData, device: torch.device, model: nn.Module,
                 train_set: Split):
        self.config, self.epochs, self.data, self.device = config, config["epochs"], data, device
        self.freeze_epochs = config.get("freeze_epochs", 0)
        self.autocast = runtime.autocast(config, device)
        self.model, self.train_set = model.to(device), train_set
        if config["channels_last"]:
            self.model.to(memory_format=torch.channels_last)
        self.backbone: nn.Module | None = getattr(self.model, "backbone", None)
        self.optimizer = optim.build(config["optimizer"], self.model.parameters(), config["lr"],
                                     config["beta1"], config["beta2"], config["weight_decay"])
        self.confusion: tuple[torch.Tensor, str] | None = None  # of the last evaluation, for the picture

    def train_epoch(self, epoch: int) -> dict[str, float]:
        frozen = epoch <= self.freeze_epochs
        self.model.train()
        if self.backbone is not None:
            self.backbone.requires_grad_(not frozen)
            if frozen:
                self.backbone.eval()
        for group in self.optimizer.param_groups:  # from the config each epoch: exact on resume, PBT-safe
            group["lr"] = learning_rate(self.config, epoch)
        sums = torch.zeros(2, device=self.device)  # summed loss, correct predictions
        seen = 0
        for images, labels in self.train_set.batches(self.config["batch_size"], shuffle=True, drop_last=True):
            with self.autocast:
                logits = self.model(self._layout(images)).float()
            loss = F.cross_entropy(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            sums += torch.stack([loss.detach() * len(labels), (logits.argmax(1) == labels).sum().float()])
            seen += len(labels)
        loss_sum, correct = sums.tolist()  # one GPU sync per epoch, not per step
        metrics = {"train_loss": loss_sum / seen, "train_acc": correct / seen}
        loop.check_finite(metrics, epoch)
        return metrics

    def _layout(self, images: torch.Tensor) -> torch.Tensor:
        if self.config["channels_last"]:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def evaluate(self, epoch: int) -> dict[str, float]:
        loss, accuracy, counts = self.score(self.data.val)
        metrics = {"val_loss": loss, "val_acc": accuracy}
        self.confusion = (counts, f"validation, epoch {epoch}")
        if epoch == self.epochs:  # the test set is looked at once, at the end
            _, metrics["test_acc"], counts = self.score(self.data.test)
            self.confusion = (counts, f"test, epoch {epoch}")
        return metrics

    @torch.no_grad()
    def score(self, split: Split) -> tuple[float, float, torch.Tensor]:
        """Mean loss, accuracy and the confusion counts [true, predicted] of the model on a split."""
        self.model.eval()
        k = self.data.num_classes
        loss = torch.zeros((), device=self.device)
        counts = torch.zeros(k * k, dtype=torch.long, device=self.device)
        for images, labels in split.batches(runtime.scaled(datasets.CHUNK, self.config["gpu_share"]),
                                            shuffle=False):
            with self.autocast:
                logits = self.model(self._layout(images)).float()
            loss += F.cross_entropy(logits, labels, reduction="sum")
            counts += torch.bincount(labels * k + logits.argmax(1), minlength=k * k)
        counts = counts.view(k, k).cpu()
        total = max(int(counts.sum()), 1)
        return loss.item() / total, counts.diagonal().sum().item() / total, counts

    def write_artifacts(self, directory: Path, epoch: int) -> None:
        if self.confusion is not None:
            plots.confusion_matrix(*self.confusion, directory / "confusion_matrix.png")

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "shape": [self.data.channels, self.data.image_size, self.data.num_classes]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


# -- the catalog's specs ---------------------------------------------------------------------------
def _spec(name: str, train, model_inputs: dict[str, str] | None = None) -> TrainerSpec:
    # Ranked on val_acc, compared on test_acc: logged at the last epoch only, so a sweep never
    # chooses by the test set.
    return TrainerSpec(name, train, DEFAULTS[name], METRICS, partial(resolve, name), partial(export, name),
                       promoted="classifier", picture="confusion_matrix",
                       compared=("val_acc", "test_acc", "val_loss"), summary_metrics=("val_acc", "test_acc"),
                       model_inputs=model_inputs or {})


CLASSIFIER = _spec("classifier", train_classifier)
TRANSFER = _spec("transfer", train_transfer, {"source": "discriminator"})
AUGMENT = _spec("augment", train_augment, {"generator": "generator"})
