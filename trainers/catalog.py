"""The trainer catalog: each trainer's name and the function that imports it and returns its spec.

A trainer's module (and torch with it) is imported the first time its spec is asked for, not when
the catalog is: the command line names trainers without paying seconds of torch, torchvision and
torchmetrics imports. Each spec is defined beside its train function (`trainers/gan.py`,
`trainers/classify.py`); everything that differs between trainer families is a field of it, so the
orchestrator asks the spec and never tests a trainer's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainers.config import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from trainers.loop import Report

Train = Callable[[dict[str, Any], "Report"], None]


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
    promoted: str
    """The logged model `promote` registers (as `<experiment>-<promoted>`): generator or classifier."""
    picture: str
    """The picture each epoch's checkpoint holds (`<picture>.png`), logged as `<picture>/epoch_NNN.png`."""
    compared: tuple[str, ...]
    """Metrics the sweep's view shows beside the ranking one."""
    summary_metrics: tuple[str, ...] = ()
    """Metrics the end of a sweep prints for its best trial beside the ranking one."""
    image_series: bool = False
    """The picture is also logged as an MLflow image series (key `picture`, step = epoch), which the
    view shows as its image chart."""
    stop_when: Mapping[str, Any] = field(default_factory=dict)
    """The default collapse rule: thresholds as a space's `stop_when` writes them."""
    needs_evaluator: bool = False
    """Its metrics need the dataset's evaluator network, prepared once per node before the trials."""
    model_inputs: Mapping[str, str] = field(default_factory=dict)
    """Config keys that name a trained GAN model to start from, and the part each wants
    (discriminator or generator): a sweep resolves them on the driver
    (orchestrator/sweep/model_sources.py)."""


def _mlp_gan() -> TrainerSpec:
    from trainers import gan

    return gan.MLP_GAN


def _dcgan() -> TrainerSpec:
    from trainers import gan

    return gan.DCGAN


def _classifier() -> TrainerSpec:
    from trainers import classify

    return classify.CLASSIFIER


def _transfer() -> TrainerSpec:
    from trainers import classify

    return classify.TRANSFER


def _augment() -> TrainerSpec:
    from trainers import classify

    return classify.AUGMENT


TRAINERS: dict[str, Callable[[], TrainerSpec]] = {
    "mlp_gan": _mlp_gan,
    "dcgan": _dcgan,
    "classifier": _classifier,
    "transfer": _transfer,
    "augment": _augment,
}


def get(name: str) -> TrainerSpec:
    if name not in TRAINERS:
        raise ConfigError(f"unknown trainer {name!r}; choose one of: {', '.join(TRAINERS)}")  # no config key
    return TRAINERS[name]()
