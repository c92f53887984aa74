"""Device choice, mixed precision and the RNG state that makes a resumed run exact."""

from __future__ import annotations

import contextlib
import random
import re
from typing import Any

import numpy as np
import torch

from trainers.config import ConfigError, check_choice, check_flag, check_whole

DEFAULTS: dict[str, Any] = {  # the runtime keys of every trainer's config
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "amp": "none",  # none | bf16 (CUDA; with device=auto on a machine without one: none)
    "channels_last": False,
    "resume_from": None,  # a checkpoint directory written by an earlier epoch
}
AMP = ("none", "bf16")


def check(config: dict[str, Any]) -> None:
    """The runtime keys of a trainer's config (part of its `resolve`).

    Whether CUDA is visible is checked when the trainer starts (`device`), not here: a sweep's
    driver resolves every trial's config on a head node that has no GPU.
    """
    name = config["device"]
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ConfigError(f"device={name!r} is not one of: auto, cpu, cuda, cuda:N", key="device")
    if config["amp"] == "fp16":
        raise ConfigError("amp='fp16' is not supported: float16 needs loss scaling (a GradScaler per "
                          "optimizer, and unscaled gradients inside WGAN-GP's penalty), which these "
                          "trainers do not do. Use amp=bf16: float32's range, no scaling, as fast on "
                          "Ampere and later GPUs", key="amp")
    check_choice(config, "amp", AMP)
    if config["amp"] == "bf16" and name == "cpu":
        raise ConfigError("amp='bf16' is autocast on a CUDA GPU; with device='cpu' it would be ignored. "
                          "Use amp=none, or device=cuda or auto", key="amp")
    check_whole(config, "seed")
    check_flag(config, "channels_last")


def device(name: str) -> torch.device:
    """The torch device of a checked `device` value; ConfigError if it names CUDA and none is visible."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA GPU is visible on this machine; use device=auto "
                          "or cpu", key="device")
    return torch.device(name)


def autocast(config: dict[str, Any], dev: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when amp=bf16 (bf16 needs no GradScaler); a no-op otherwise."""
    if config["amp"] == "bf16" and dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors, ints and lists: loadable with weights_only=True."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
