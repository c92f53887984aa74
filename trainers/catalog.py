"""The trainer catalog: names -> train functions, defaults, validation, metrics, model export.

A trainer's module (and torch with it) is imported the first time its spec is looked up, not
when the catalog is: the command line names trainers and checks `GAN_TRAINERS` (report, help)
without paying seconds of torch, torchvision and torchmetrics imports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from functools import partial
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
    model_inputs: Mapping[str, str] = field(default_factory=dict)
    """Config keys that name a trained GAN model to start from, and the part each wants
    (discriminator or generator): a sweep resolves them on the driver (orchestrator/model_sources.py)."""


def _gan(name: str, train: str, defaults: str) -> TrainerSpec:
    from trainers import gan

    return TrainerSpec(name, getattr(gan, train), getattr(gan, defaults), gan.METRICS,
                       partial(gan.resolve, name), partial(gan.export_models, name))


def _classifier(name: str, train: str, model_inputs: Mapping[str, str] | None = None) -> TrainerSpec:
    from trainers import classify

    return TrainerSpec(name, getattr(classify, train), classify.DEFAULTS[name], classify.METRICS,
                       partial(classify.resolve, name), partial(classify.export, name), model_inputs or {})


class Catalog(MutableMapping[str, TrainerSpec]):
    """Trainer name -> TrainerSpec, each spec built (its module imported) on its first lookup.
    Names, `in` and iteration import nothing; setting an entry replaces the spec (tests do)."""

    def __init__(self, builders: Mapping[str, Callable[[], TrainerSpec]]) -> None:
        self._builders = dict(builders)
        self._specs: dict[str, TrainerSpec] = {}

    def __getitem__(self, name: str) -> TrainerSpec:
        if name not in self._specs:
            self._specs[name] = self._builders[name]()  # KeyError for an unknown name, as a dict
        return self._specs[name]

    def __setitem__(self, name: str, spec: TrainerSpec) -> None:
        self._specs[name] = spec
        self._builders.setdefault(name, lambda: spec)

    def __delitem__(self, name: str) -> None:
        del self._builders[name]
        self._specs.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)


TRAINERS = Catalog({
    "gan": partial(_gan, "gan", "train_mlp", "MLP_DEFAULTS"),
    "dcgan": partial(_gan, "dcgan", "train_dcgan", "DCGAN_DEFAULTS"),
    "classifier": partial(_classifier, "classifier", "train_classifier"),
    "transfer": partial(_classifier, "transfer", "train_transfer", {"source": "discriminator"}),
    "augment": partial(_classifier, "augment", "train_augment", {"generator": "generator"}),
})

GAN_TRAINERS = frozenset({"gan", "dcgan"})  # the trainers whose runs hold a generator (promote, generate)


def get(name: str) -> TrainerSpec:
    if name not in TRAINERS:
        raise ConfigError(f"unknown trainer {name!r}; choose one of: {', '.join(TRAINERS)}")  # no config key
    return TRAINERS[name]
