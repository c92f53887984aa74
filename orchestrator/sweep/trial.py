"""What runs inside a Tune trial: a trainer whose report hook is `ray.tune.report`.

The trial itself talks to no MLflow server. Each epoch's checkpoint (weights, sample grid and
`metrics.json`) goes through Tune into the sweep's storage, and the driver's tracking callback
logs from there: one writer per sweep, and exactly-once logging that follows Tune's own record
of results and checkpoints, across retries and `--resume` alike.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from orchestrator.space import objective
from orchestrator.sweep import checkpoint_storage
from orchestrator.sweep.outcome import CONFIG_ERROR
from trainers import catalog, evaluator, runtime
from trainers.config import ConfigError
from trainers.loop import Diverged

METRICS_FILE = "metrics.json"
NODE_KEY, GPUS_KEY = "node_id", "cuda_visible_devices"  # result keys, not metrics
EVALUATOR_KEY = "evaluator"  # result key: the digest of the evaluator network that scored the epoch


def make_trainable(trainer: str, objectives: dict[str, str], gpu: float = 0.0):
    """A Tune function trainable for `trainer`; objectives maps each ranked metric to min/max, `gpu`
    is a trial's resources.gpu."""
    spec = catalog.get(trainer)
    worst = {metric: objective.worst(mode) for metric, mode in objectives.items()}

    def run_trial(config: dict[str, Any]) -> None:
        where = placement()

        def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
            if checkpoint_dir is None:  # divergence: a last result without a checkpoint
                tune.report({**metrics, **worst, **where})
                return
            (Path(checkpoint_dir) / METRICS_FILE).write_text(json.dumps(metrics))
            tune.report({**metrics, **where, **scored_by(Path(checkpoint_dir))},
                        checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

        with tempfile.TemporaryDirectory(prefix="trial-") as local:
            checkpoint = tune.get_checkpoint()
            if checkpoint is not None:  # a retry after a failure, a resumed sweep, or a PBT exploit
                with checkpoint.as_directory() as directory:
                    shutil.copytree(directory, f"{local}/resume", dirs_exist_ok=True)
                config = {**config, "resume_from": f"{local}/resume"}
            # copies the driver put in the sweep's storage: the models it starts from, the evaluator
            for key in [*spec.model_inputs, *(["evaluator"] if spec.needs_evaluator else [])]:
                if config.get(key):
                    checkpoint_storage.download(config[key], Path(local) / key)
                    config = {**config, key: str(Path(local) / key)}
            try:
                spec.train(placed(config, spec.defaults["device"], gpu, bool(where[GPUS_KEY])), report)
            except torch.OutOfMemoryError as err:  # retried (a neighbour's peak may have passed)
                total = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else 0
                raise RuntimeError(runtime.out_of_memory_message(gpu, total)) from err
            except Diverged:
                return  # reported with the reason; the tracking callback marks the run failed
            except ConfigError as err:
                # The same config fails the same way on every attempt: end the trial instead of
                # raising, which Tune would retry.
                tune.report({"epoch": 0, CONFIG_ERROR: str(err), **worst, **where})

    run_trial.__name__ = f"gansweep_{trainer}"
    return run_trial


def placement() -> dict[str, str]:
    """Where this attempt of the trial runs: its Ray node and the GPUs Ray gave it. Recorded in the
    trial's MLflow run."""
    return {NODE_KEY: ray.get_runtime_context().get_node_id(),
            GPUS_KEY: ",".join(str(gpu) for gpu in ray.get_gpu_ids())}


def scored_by(checkpoint_dir: Path) -> dict[str, str]:
    """The digest of the evaluator network behind the epoch's metrics, as its checkpoint records it."""
    record = checkpoint_dir / evaluator.DIGEST_FILE
    return {EVALUATOR_KEY: record.read_text().strip()} if record.exists() else {}


def placed(config: dict[str, Any], default_device: str, gpu: float, holds_gpu: bool) -> dict[str, Any]:
    """The trial's config on the device Ray gave it (runtime.placed_device), with its share of the
    card when it holds a fraction of one."""
    device = runtime.placed_device(config.get("device", default_device), holds_gpu)
    share = gpu if holds_gpu and 0 < gpu < 1 else None
    return {**config, "device": device, "gpu_share": share}
