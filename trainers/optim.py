"""Optimizers by name, with the knobs the source reports varied."""

from __future__ import annotations

from collections.abc import Iterable

import torch

OPTIMIZERS = ("adam", "adamax", "nadam", "amsgrad", "rmsprop", "sgd")


def build(name: str, params: Iterable[torch.nn.Parameter], lr: float, beta1: float = 0.9,
          beta2: float = 0.999, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The optimizer `name` (one of OPTIMIZERS, checked by the trainer's resolve)."""
    betas = (beta1, beta2)
    if name in ("adam", "amsgrad"):
        return torch.optim.Adam(params, lr, betas, weight_decay=weight_decay, amsgrad=name == "amsgrad")
    if name == "adamax":
        return torch.optim.Adamax(params, lr, betas, weight_decay=weight_decay)
    if name == "nadam":
        return torch.optim.NAdam(params, lr, betas, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr, alpha=beta2, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr, momentum=beta1, weight_decay=weight_decay)
