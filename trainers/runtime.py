"""Device choice, a trial's share of its GPU, mixed precision, determinism and the RNG state that
makes a resumed run exact."""

from __future__ import annotations

import contextlib
import os
import random
import re
import sys
import warnings
from typing import Any

import numpy as np
import torch

from trainers.config import ConfigError, check_choice, check_flag, check_whole

DEFAULTS: dict[str, Any] = {  # the runtime keys of every trainer's config
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "amp": "none",  # none | bf16 (CUDA; with device=auto on a machine without one: none)
    "channels_last": False,
    # Deterministic algorithms (cuDNN, cuBLAS, torch's own) where the GPU has them, so that a run
    # resumed from a checkpoint repeats exactly; off by default on GPUs: slower, and cuDNN's
    # autotuner (on otherwise) picks the fastest kernels.
    "deterministic": False,
    "gpu_share": None,  # the fraction of its GPU a sweep's trial holds (resources.gpu < 1); None: all
    "resume_from": None,  # a checkpoint directory written by an earlier epoch
}
AMP = ("none", "bf16")
MEMORY_MARGIN = 0.95  # of its share a trial's allocator may hold: the CUDA context lives outside it
BF16_NATIVE = (8, 0)  # compute capability from which bf16 runs natively (Ampere)


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
    check_flag(config, "channels_last", "deterministic")
    share = config["gpu_share"]
    if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float))
                              or not 0 < share <= 1):
        raise ConfigError(f"gpu_share={share!r} must be a fraction in (0, 1] (a sweep sets it from "
                          "resources.gpu)", key="gpu_share")


def device(name: str) -> torch.device:
    """The torch device of a checked `device` value; ConfigError if it names CUDA and none is visible."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA GPU is visible on this machine; use device=auto "
                          "or cpu", key="device")
    return torch.device(name)


def placed_device(name: str, holds_gpu: bool) -> str:
    """A sweep trial's device: the one Ray gave it. Without a GPU the CPU, whatever the node has (Ray
    2.60 no longer hides a node's GPUs from a worker that holds none, ray#54868); with one, its own
    card, which Ray makes visible as cuda:0. The space's checks refuse the combinations that cannot
    work (device cuda without a GPU, cpu with one, cuda:N); the errors here are for a config that
    bypassed them."""
    if not holds_gpu:
        if name.startswith("cuda"):
            raise ConfigError(f"device={name!r} but this trial holds no GPU: set resources.gpu in the "
                              "space, or device: auto", key="device")
        return "cpu"
    if name == "cpu":
        raise ConfigError("device='cpu' but this trial holds a GPU it would never use: set resources.gpu: "
                          "0, or device: auto", key="device")
    # auto: the trial's card where CUDA sees it (Ray sets CUDA_VISIBLE_DEVICES to it), else the CPU
    return "auto" if name == "auto" else "cuda:0"


def setup(config: dict[str, Any]) -> torch.device:
    """The device of a checked config, made ready: on a GPU the allocator capped to the trial's share,
    cuDNN's autotuner or determinism, and a warning where bf16 would be emulated."""
    dev = device(config["device"])
    deterministic(config["deterministic"])
    if dev.type == "cuda":
        if config["gpu_share"]:
            torch.cuda.set_per_process_memory_fraction(memory_fraction(config["gpu_share"]), dev)
        if config["amp"] == "bf16" and (problem := bf16_problem(torch.cuda.get_device_capability(dev),
                                                                torch.cuda.get_device_name(dev))):
            warnings.warn(problem, stacklevel=2)
    return dev


def memory_fraction(share: float) -> float:
    """The part of the card a trial holding `share` of it may allocate."""
    return share * MEMORY_MARGIN


def scaled(size: int, share: float | None, least: int = 16) -> int:
    """A per-chunk size (images per evaluation batch) for a trial holding `share` of its GPU."""
    return size if not share else max(least, int(size * share))


def bf16_problem(capability: tuple[int, int], name: str) -> str | None:
    """Why amp=bf16 does not pay on this GPU (emulated before compute capability 8.0), or None."""
    if tuple(capability) >= BF16_NATIVE:
        return None
    return (f"amp='bf16' on {name} (compute capability {capability[0]}.{capability[1]}): bf16 is "
            "emulated before Ampere (8.0) and runs slower than float32 there. Use amp=none on this GPU")


def deterministic(on: bool) -> None:
    """Deterministic algorithms, or cuDNN's autotuner (the fastest kernels for fixed shapes). Set for
    every run: a worker reused for the next trial keeps the last setting otherwise."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic mode
    # warn_only: an op without a deterministic kernel warns instead of failing the run.
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on


@contextlib.contextmanager
def deterministic_section():
    """Deterministic algorithms for what runs inside (the evaluator's training), the run's own setting
    restored afterwards."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    deterministic(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


def release_cached_memory(dev: torch.device) -> None:
    """Give the allocator's cached blocks back after an evaluation's peak, for the card's other trials."""
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def out_of_memory_message(gpu: float, total_bytes: int) -> str:
    """What a trial that ran out of GPU memory tells its user: its share and what to change."""
    held = f"{gpu:g} of a {total_bytes / 1024 ** 3:.1f} GiB GPU" if total_bytes else f"{gpu:g} GPU"
    return (f"CUDA out of memory in a trial holding resources.gpu={held}: lower batch_size or eval_samples, "
            "or raise resources.gpu in the space (fewer trials share a card)")


def usable_cpus() -> int:
    """CPUs this process may use: its torch threads (Ray sets them to the trial's resources.cpu) and
    its CPU affinity, whichever is fewer."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(torch.get_num_threads(), affinity))


def autocast(config: dict[str, Any], dev: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when amp=bf16 (bf16 needs no GradScaler); a no-op otherwise."""
    if config["amp"] == "bf16" and dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(dev: torch.device) -> dict[str, Any]:
    """Every generator's state as tensors, ints and lists: loadable with weights_only=True. Of CUDA's,
    only the state of the run's own device (a list of one; none on the CPU)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(dev)] if dev.type == "cuda" else [],
    }


def set_rng_state(state: dict[str, Any], dev: torch.device) -> None:
    """Restore the generators of `rng_state`. A CUDA state that does not fit (a checkpoint from a GPU
    resumed on the CPU, or from a machine with more GPUs) is dropped with a note: the run goes on,
    its random stream no longer the one it would have had."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if cuda := cuda_state_for(state["cuda"], dev):
        torch.cuda.set_rng_state(cuda, dev)


def cuda_state_for(saved: list[torch.Tensor], dev: torch.device) -> torch.Tensor | None:
    """The saved CUDA state to restore on `dev`, or None (with a note when one was saved but cannot
    be used). Checkpoints hold one state, of their run's device; older ones held every visible
    GPU's, of which the run used the first (or the one its index names)."""
    if not saved:
        return None
    index = 0 if len(saved) == 1 else (dev.index or 0)
    if dev.type != "cuda" or index >= len(saved):
        where = "the CPU" if dev.type != "cuda" else f"{dev} (the checkpoint holds {len(saved)} GPUs' states)"
        print(f"note: the checkpoint's CUDA random state does not fit {where}; resuming without it "
              "(the run goes on, its random numbers are not those it would have drawn)", file=sys.stderr)
        return None
    return saved[index]
