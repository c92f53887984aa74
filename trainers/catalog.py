"""The trainer catalog: names -> train functions, defaults, validation, metrics, model export."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from torch import nn

from trainers import classify, gan
from trainers.config import ConfigError
from trainers.loop import Report

Train = Callable[[dict[str, Any], Report], None]


@dataclass(frozen=True)
class TrainerSpec:
    name: str
    train: Train
    defaults: Mapping[str, Any]
    metrics: tuple[str, ...]
    """Metric names reported every epoch (a sweep's `metric` must be one of them)."""
    resolve: Callable[[dict[str, Any]], dict[str, Any]]
    """Defaults + overrides, validated; raises ConfigError naming the key."""
    export: Callable[[dict[str, Any], dict[str, Any]], dict[str, nn.Module]]
    """(config, checkpoint's task state) -> the models to save, by name."""
    model_inputs: Mapping[str, str] = field(default_factory=dict)
    """Config keys that name a trained GAN model to start from, and the part each wants
    (discriminator or generator): a sweep resolves them on the driver (orchestrator/model_sources.py)."""


def _gan(name: str, train: Train, defaults: Mapping[str, Any]) -> TrainerSpec:
    return TrainerSpec(name, train, defaults, gan.METRICS, partial(gan.resolve, name),
                       partial(gan.export_models, name))


def _classifier(name: str, train: Train, model_inputs: Mapping[str, str] | None = None) -> TrainerSpec:
    return TrainerSpec(name, train, classify.DEFAULTS[name], classify.METRICS,
                       partial(classify.resolve, name), partial(classify.export, name), model_inputs or {})


TRAINERS: dict[str, TrainerSpec] = {
    "gan": _gan("gan", gan.train_mlp, gan.MLP_DEFAULTS),
    "dcgan": _gan("dcgan", gan.train_dcgan, gan.DCGAN_DEFAULTS),
    "classifier": _classifier("classifier", classify.train_classifier),
    "transfer": _classifier("transfer", classify.train_transfer, {"source": "discriminator"}),
    "augment": _classifier("augment", classify.train_augment, {"generator": "generator"}),
}

GAN_TRAINERS = frozenset({"gan", "dcgan"})  # the trainers whose runs hold a generator (promote, generate)


def get(name: str) -> TrainerSpec:
    if name not in TRAINERS:
        raise ConfigError(f"unknown trainer {name!r}; choose one of: {', '.join(TRAINERS)}")  # no config key
    return TRAINERS[name]
