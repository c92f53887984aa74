"""The trainer catalog: names -> train functions, defaults, validation, metrics, model export."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn

from trainers import classify, gan
from trainers.config import ConfigError
from trainers.loop import Report


@dataclass(frozen=True)
class TrainerSpec:
    name: str
    train: Callable[[dict[str, Any], Report], None]
    defaults: Mapping[str, Any]
    metrics: tuple[str, ...]
    """Metric names reported every epoch (a sweep's `metric` must be one of them)."""
    resolve: Callable[[dict[str, Any]], dict[str, Any]]
    """Defaults + overrides, validated; raises ConfigError naming the key."""
    export: Callable[[dict[str, Any], dict[str, Any]], dict[str, nn.Module]]
    """(config, checkpoint's task state) -> the models to save, by name."""


TRAINERS: dict[str, TrainerSpec] = {
    "gan": TrainerSpec("gan", gan.train_mlp, gan.MLP_DEFAULTS, gan.METRICS,
                       partial(gan.resolve, "gan"), partial(gan.export_models, "gan")),
    "dcgan": TrainerSpec("dcgan", gan.train_dcgan, gan.DCGAN_DEFAULTS, gan.METRICS,
                         partial(gan.resolve, "dcgan"), partial(gan.export_models, "dcgan")),
    **{name: TrainerSpec(name, partial(classify.train, name), classify.DEFAULTS[name], classify.METRICS,
                         partial(classify.resolve, name), partial(classify.export, name))
       for name in ("classifier", "transfer", "augment")},
}


def get(name: str) -> TrainerSpec:
    if name not in TRAINERS:
        raise ConfigError(f"unknown trainer {name!r}; choose one of: {', '.join(TRAINERS)}")
    return TRAINERS[name]
