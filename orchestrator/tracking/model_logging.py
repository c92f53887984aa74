"""A finished trial's models, logged to its run as MLflow PyTorch models from its last checkpoint."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.tracking import MlflowClient

import trainers
from orchestrator.tracking import tags
from trainers import checkpoint as checkpoints
from trainers.catalog import TrainerSpec

# Models are saved pickled (not 'pt2'): conditional generators take (noise, labels) and
# `generate` needs the nn.Module with its attributes. They are our own models, in our own store.
logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)


def log_models(client: MlflowClient, run_id: str, spec: TrainerSpec, config: dict[str, Any],
               checkpoint) -> None:
    """The trial's last weights as MLflow PyTorch models (generator, discriminator, ...), as the
    trainer's spec exports them from its checkpoint (a ray.tune.Checkpoint, or None: nothing).

    A failure here is tagged on the run and printed, but never fails the trial or the sweep.
    """
    if checkpoint is None:
        return
    try:
        _export(run_id, spec, config, checkpoint)
    except Exception as err:  # noqa: BLE001 - the metrics and samples are still worth keeping
        client.set_tag(run_id, tags.MODEL_ERROR, repr(err)[-5000:])
        print(f"warning: could not log the models of run {run_id}: {err!r}", file=sys.stderr)


def _export(run_id: str, spec: TrainerSpec, config: dict[str, Any], checkpoint) -> None:
    with checkpoint.as_directory() as directory:
        state = checkpoints.load(directory)["task"]
    models = spec.export(dict(config), state)
    code = str(Path(trainers.__file__).parent)  # the models load where gansweep is not installed
    # Given, not inferred: inference imports the model in a subprocess, seconds per model.
    requirements = [f"torch=={torch.__version__.split('+')[0]}"]
    with mlflow.start_run(run_id=run_id):
        for name, model in models.items():
            mlflow.pytorch.log_model(model, name=name, code_paths=[code], signature=_signature(model),
                                     serialization_format="pickle", pip_requirements=requirements)


def _signature(model):
    """noise -> images for an unconditional generator, images -> scores for a discriminator."""
    from mlflow.models import infer_signature

    if getattr(model, "num_classes", 0):
        return None  # a conditional model takes (input, labels): no single-tensor signature
    example = (torch.randn(2, model.noise_dim) if hasattr(model, "noise_dim")
               else torch.zeros(2, *model.image_shape))
    with torch.no_grad():
        return infer_signature(example.numpy(), model(example).numpy())
