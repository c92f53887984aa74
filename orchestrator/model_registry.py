"""The model registry: promote a sweep's best generator to `@champion`, roll back, sample from it.

Aliases carry the state: `champion` is the version in use, `previous` the one it replaced. A
registered model made here is tagged `gansweep.experiment`, so a name already used by an
unrelated model is refused rather than overwritten.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator import tags
from orchestrator.errors import LookupProblem
from orchestrator.runs import Sweep, children, varying_params

CHAMPION, PREVIOUS = "champion", "previous"


@dataclass
class Candidate:
    run_id: str
    run_name: str
    value: float
    model_uri: str
    params: dict[str, str]


def best_candidate(client: MlflowClient, sweep: Sweep, metric: str, mode: str) -> Candidate:
    """The finished trial with the best metric that has a generator model."""
    runs = [r for r in children(client, sweep.experiment_id, sweep.parent.info.run_id)
            if r.info.status == "FINISHED"]
    scored = [r for r in runs if math.isfinite(r.data.metrics.get(metric, math.nan))]
    if not scored:
        known = sorted({m for r in runs for m in r.data.metrics})
        raise LookupProblem(f"no finished run of sweep {sweep.parent.info.run_name!r} has metric "
                            f"{metric!r}; they have: {', '.join(known) or 'no metrics'}")
    scored.sort(key=lambda r: r.data.metrics[metric], reverse=mode == "max")
    keys = varying_params(runs)
    for run in scored:
        models = client.search_logged_models(
            [sweep.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}' AND name = 'generator'")
        if models:
            return Candidate(run.info.run_id, run.info.run_name, run.data.metrics[metric],
                             models[0].model_uri, {k: run.data.params.get(k, "") for k in keys})
        if run is scored[0]:
            print(f"note: the best run {run.info.run_name} has no generator model; trying the next")
    raise LookupProblem(f"no finished run of sweep {sweep.parent.info.run_name!r} has a generator model")


def _champion(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _check_owner(client: MlflowClient, name: str, experiment: str) -> bool:
    """True if the registered model exists (and is ours); LookupProblem if it belongs to others."""
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return False
    owner = model.tags.get(tags.OWNER)
    if owner != experiment:
        raise LookupProblem(
            f"registered model {name!r} already exists and is not the generator of experiment "
            f"{experiment!r} (its {tags.OWNER} tag is {owner!r}); choose another name with --name")
    return True


def promote(client: MlflowClient, sweep: Sweep, name: str, metric: str, mode: str, force: bool) -> str:
    """Register the sweep's best generator and point @champion at it; returns what happened."""
    candidate = best_candidate(client, sweep, metric, mode)
    exists = _check_owner(client, name, sweep.experiment_name)
    current = _champion(client, name) if exists else None
    if current is not None:
        held = current.tags.get("metric_value")
        held_value = float(held) if held is not None and current.tags.get("metric") == metric else None
        if held_value is not None and not force:
            better = candidate.value < held_value if mode == "min" else candidate.value > held_value
            if not better:
                raise LookupProblem(
                    f"not promoted: the candidate {candidate.run_name} has {metric} {candidate.value:.4g}, "
                    f"the champion (version {current.version}) has {held_value:.4g}, which is at least as "
                    f"good ({mode}). Use --force to promote anyway.")
    if not exists:
        client.create_registered_model(
            name, tags={tags.OWNER: sweep.experiment_name},
            description=f"Generators promoted from sweeps of {sweep.experiment_name}")
    version = mlflow.register_model(candidate.model_uri, name, tags={
        "metric": metric, "metric_value": repr(candidate.value), "mode": mode,
        "sweep_run_id": sweep.parent.info.run_id, "run_id": candidate.run_id,
        "run_name": candidate.run_name, "params": json.dumps(candidate.params),
    })
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS, current.version)
    client.set_registered_model_alias(name, CHAMPION, version.version)
    replaced = f", replacing version {current.version} (now @{PREVIOUS})" if current else ""
    return (f"promoted {candidate.run_name} ({metric} {candidate.value:.4g}) as {name} version "
            f"{version.version} @{CHAMPION}{replaced}")


def rollback(client: MlflowClient, name: str) -> str:
    """@champion back to @previous (and @previous to the version rolled away from)."""
    try:
        previous = client.get_model_version_by_alias(name, PREVIOUS)
    except MlflowException as err:
        raise LookupProblem(f"registered model {name!r} has no @{PREVIOUS} version to roll back to") from err
    current = _champion(client, name)
    client.set_registered_model_alias(name, CHAMPION, previous.version)
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS, current.version)
    return f"{name}: @{CHAMPION} is version {previous.version} again" + (
        f", @{PREVIOUS} is version {current.version}" if current else "")


def generate(model_uri: str, n: int, out: Path, seed: int = 0) -> tuple[int, int]:
    """A sample grid from a generator model; one row per class for a conditional one."""
    import torch
    from torchvision.utils import save_image

    try:
        generator = mlflow.pytorch.load_model(model_uri, map_location="cpu")
    except MlflowException as err:
        raise LookupProblem(f"cannot load {model_uri}: {err.message}") from err
    if not hasattr(generator, "noise_dim"):
        raise LookupProblem(f"{model_uri} is not a gansweep generator (it has no noise_dim)")
    generator.eval()
    torch.manual_seed(seed)
    classes = getattr(generator, "num_classes", 0)
    labels, nrow = None, max(1, int(math.sqrt(n)))
    if classes:
        nrow = max(1, n // classes)  # one row per class
        labels = torch.arange(classes).repeat_interleave(nrow)
        n = len(labels)
    with torch.no_grad():
        images = generator(torch.randn(n, generator.noise_dim), labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, out, nrow=nrow, normalize=True, value_range=(-1, 1))
    return tuple(images.shape[-2:])
