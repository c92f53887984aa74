"""Trainer names -> train functions, their config defaults and the metrics they report."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from trainers import gan
from trainers.config import ConfigError
from trainers.loop import Report


@dataclass(frozen=True)
class TrainerSpec:
    name: str
    train: Callable[[dict[str, Any], Report], None]
    defaults: Mapping[str, Any]
    metrics: tuple[str, ...]
    """Metric names reported every epoch (a sweep's `metric` must be one of them)."""


TRAINERS: dict[str, TrainerSpec] = {
    "gan": TrainerSpec("gan", gan.train_mlp, gan.MLP_DEFAULTS, gan.METRICS),
    "dcgan": TrainerSpec("dcgan", gan.train_dcgan, gan.DCGAN_DEFAULTS, gan.METRICS),
}


def get(name: str) -> TrainerSpec:
    if name not in TRAINERS:
        raise ConfigError(f"unknown trainer {name!r}; choose one of: {', '.join(TRAINERS)}")
    return TRAINERS[name]
