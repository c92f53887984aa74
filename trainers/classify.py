"""Classifier trainers: `classifier` (seed 000's CNN baseline, LeNet-5, torchvision nets), `transfer`
(a trained discriminator with a new class head, seed 000 section 3.3) and `augment` (a classifier on
the real training images plus generated or classically augmented ones, seed 002 Table 1).

All three run the one ClassifyTask; they differ only in how the model and the training set are built.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from trainers import augment, loop, optim, runtime, sources
from trainers import data as datasets
from trainers.classify_task import SCHEDULES, ClassifyTask, Shape
from trainers.config import ConfigError, check_choice, check_positive, check_range, check_whole, merge
from trainers.data import ImageData, Split
from trainers.loop import Report
from trainers.models import classifiers

METRICS: tuple[str, ...] = ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "epoch_time_s")

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
    "input": "native",  # native (stems adapted to small images) | resize224 (seed 002's way, ~49x compute)
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
    "n_extra": None,  # extra training images (None: as many as the real ones, as in seed 002)
    "generator": None,  # augment=gan: a conditional generator, runs:/<run_id>/generator or models:/...
    "lr": 2e-4,  # seed 002: Adam, lr 2e-4, for every classifier
}
DEFAULTS = {"classifier": CLASSIFIER_DEFAULTS, "transfer": TRANSFER_DEFAULTS, "augment": AUGMENT_DEFAULTS}


def train(trainer: str, config: dict[str, Any], report: Report) -> None:
    """The `train(config, report)` of the classifier, transfer and augment trainers."""
    config = resolve(trainer, config)
    loop.run(build_task(trainer, config), config, report)


def build_task(trainer: str, config: dict[str, Any]) -> ClassifyTask:
    """The shared task with this trainer's model and training set (config: resolved)."""
    return ClassifyTask(config, partial(build_model, trainer, config), partial(training_set, trainer, config))


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
    if "arch" in config:
        classifiers.check_arch(config)
    if trainer == "transfer":
        _check_transfer(config)
    if trainer == "augment":
        _check_augment(config)
    return config


def _check_transfer(config: dict[str, Any]) -> None:
    check_choice(config, "head", classifiers.HEADS)
    check_positive(config, "head_units", "finetune_lr")
    if not config["source"]:
        raise ConfigError("transfer needs source: the discriminator to start from, as an MLflow model URI "
                          "(runs:/<run_id>/discriminator) or a dcgan checkpoint (.../checkpoints/epoch_NNN)",
                          key="source")
    check_whole(config, "freeze_epochs")
    freeze, epochs = config["freeze_epochs"], config["epochs"]
    if freeze > epochs:
        raise ConfigError(f"freeze_epochs={freeze} is larger than epochs={epochs}: the backbone would "
                          f"never be unfrozen. Use freeze_epochs={epochs} to train the head only",
                          key="freeze_epochs")


def _check_augment(config: dict[str, Any]) -> None:
    check_choice(config, "augment", augment.MODES)
    check_whole(config, "n_extra")
    if config["augment"] == "gan" and not config["generator"]:
        raise ConfigError("augment=gan needs generator: the MLflow model URI of a conditional generator "
                          "(runs:/<run_id>/generator of a dcgan run with conditional=true)", key="generator")


def build_model(trainer: str, config: dict[str, Any], shape: Shape) -> nn.Module:
    """The untrained classifier, or for `transfer` the source discriminator with a new head."""
    channels, size, classes = shape
    if trainer != "transfer":
        return classifiers.build_classifier(config["arch"], channels, size, classes, config["input"])
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


def training_set(trainer: str, config: dict[str, Any], data: ImageData, device: torch.device) -> Split:
    """The real training split, plus the extra images of the `augment` trainer."""
    return augment.training_set(config, data, device) if trainer == "augment" else data.train


def export(trainer: str, config: dict[str, Any], state: dict[str, Any]) -> dict[str, nn.Module]:
    """The trained classifier of a checkpoint's `task` state (transfer reloads its source's architecture)."""
    config = resolve(trainer, {k: v for k, v in config.items() if k != "resume_from"})
    model = build_model(trainer, config, tuple(state["shape"]))
    model.load_state_dict(state["model"])
    return {"classifier": model.eval()}
