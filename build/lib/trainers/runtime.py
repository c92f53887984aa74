"""Device choice, mixed precision and the RNG state that makes a resumed run exact."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch

from trainers.config import ConfigError

DEFAULTS: dict[str, Any] = {  # the runtime keys of every trainer's config
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda
    "amp": "none",  # none | bf16 (CUDA)
    "channels_last": False,
    "resume_from": None,  # a checkpoint directory written by an earlier epoch
}


def device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"device={name!r} is not one of: auto, cpu, cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA GPU is visible; use device=auto or cpu")
    return torch.device(name)


def autocast(config: dict[str, Any], dev: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when amp=bf16 (no GradScaler needed for bf16); a no-op otherwise."""
    if config["amp"] not in ("none", "bf16"):
        raise ConfigError(f"amp={config['amp']!r} is not one of: none, bf16")
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
