"""The epoch loop every trainer shares: resume, train, evaluate, checkpoint, report.

A trainer supplies a `Task` (how to train and evaluate one epoch, what its state is, which
pictures to write); the loop owns everything else, so checkpoint/resume and divergence work the
same for GANs and classifiers.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import torch

from trainers import checkpoint, runtime


class Diverged(RuntimeError):
    """A loss became NaN or infinite: the run cannot recover, so it stops with this reason."""


class Report(Protocol):
    """Called once per epoch; under Ray it is `ray.tune.report`, alone it prints and writes files."""

    def __call__(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None: ...


class Task(Protocol):
    epochs: int
    device: torch.device

    def train_epoch(self, epoch: int) -> dict[str, float]: ...

    def evaluate(self, epoch: int) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def write_artifacts(self, directory: Path, epoch: int) -> None: ...


def run(task: Task, config: dict[str, Any], report: Report) -> None:
    """Train from the checkpoint in config['resume_from'] (if any) to task.epochs.

    Each epoch ends with `report(metrics, checkpoint_dir)`; the directory is temporary and
    belongs to the hook until it returns (Ray persists it, the standalone hook copies it).
    """
    start = 0
    if config.get("resume_from"):
        state = checkpoint.load(config["resume_from"])
        task.load_state_dict(state["task"])
        runtime.set_rng_state(state["rng"], task.device)
        start = state["epoch"]
    for epoch in range(start + 1, task.epochs + 1):
        began = time.perf_counter()
        try:
            metrics = task.train_epoch(epoch)
        except Diverged as err:
            report({"epoch": epoch, "diverged": 1, "stop_reason": str(err)}, None)
            raise
        metrics.update(task.evaluate(epoch))
        runtime.release_cached_memory(task.device)  # the evaluation's peak, back to the card's other trials
        check_finite(metrics, epoch)
        metrics["epoch"] = epoch
        metrics["epoch_time_s"] = time.perf_counter() - began
        with tempfile.TemporaryDirectory(prefix=f"epoch{epoch:03d}-") as directory:
            state = {"epoch": epoch, "task": task.state_dict(), "rng": runtime.rng_state(task.device)}
            checkpoint.save(state, directory)
            task.write_artifacts(Path(directory), epoch)
            report(metrics, directory)


def check_finite(values: dict[str, float], epoch: int, step: int | None = None) -> None:
    """Raise Diverged naming the first loss that is NaN or infinite."""
    for name, value in values.items():
        if name.endswith("loss") and not math.isfinite(value):
            where = f"epoch {epoch}" + (f", step {step}" if step is not None else "")
            raise Diverged(
                f"{name} became {value} at {where}: training diverged. "
                "Try a lower learning rate, another loss (wgan-gp, hinge) or spectral_norm=true."
            )
