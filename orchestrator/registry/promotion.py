"""The model registry: promote a sweep's best model to `@champion`, roll back.

The trainer's spec says which logged model a sweep's trials offer (`TrainerSpec.promoted`): a GAN
sweep's `generator` (registered as `<experiment>-generator`), a classifier sweep's `classifier`.
Aliases carry the state: `champion` is the version in use, `previous` the one it replaced. A
registered model made here is tagged `gansweep.experiment`, so a name already used by an unrelated
model is refused rather than overwritten.

Every call goes through the client of the command's tracking URI: MLflow's fluent helpers
(`mlflow.register_model`) use the process-wide URI, which is ./mlflow.db whatever --tracking-uri said.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator import library_internals
from orchestrator.errors import LookupProblem
from orchestrator.space import objective
from orchestrator.space.source_forms import CHAMPION
from orchestrator.sweep.outcome import COLLAPSED, can_be_best
from orchestrator.tracking import tags
from orchestrator.tracking.runs import Sweep, children, varying_params
from trainers import catalog
from trainers.catalog import TrainerSpec

PREVIOUS = "previous"
PICTURE_WORDS = {"samples": "sample grid", "confusion_matrix": "confusion matrix"}  # in a description


def trainer_of(sweep: Sweep) -> TrainerSpec:
    """The spec of the trainer a sweep ran (its parent run's tag)."""
    return catalog.get(sweep.parent.data.tags[tags.TRAINER])


def registered_name(sweep: Sweep) -> str:
    return f"{sweep.experiment_name}-{trainer_of(sweep).promoted}"


@dataclass
class Candidate:
    run_id: str
    run_name: str
    value: float
    model_id: str
    location: str  # where the logged model's files are (its artifact location)
    params: dict[str, str]  # the params that differ between the sweep's trials
    conditional: bool  # a generator that takes class labels


def best_candidate(client: MlflowClient, sweep: Sweep, metric: str, mode: str, part: str) -> Candidate:
    """The finished trial with the best metric that has logged the model `part` (never a collapsed one)."""
    runs = [r for r in children(client, sweep.experiment_id, sweep.parent.info.run_id)
            if r.info.status == "FINISHED"]
    collapsed = [r for r in runs if not can_be_best(r.data.tags.get(tags.STATUS, ""))]
    if collapsed:
        print(f"note: not promoting {', '.join(sorted(r.info.run_name for r in collapsed))}: {COLLAPSED} "
              f"(one picture, whatever its {metric})")
    scored = [r for r in runs if math.isfinite(r.data.metrics.get(metric, math.nan)) and r not in collapsed]
    if not scored:
        known = sorted({m for r in runs for m in r.data.metrics})
        raise LookupProblem(f"no finished run of sweep {sweep.parent.info.run_name!r} has metric "
                            f"{metric!r}; they have: {', '.join(known) or 'no metrics'}")
    scored.sort(key=lambda r: objective.sort_key(r.data.metrics[metric], mode))
    keys = varying_params(runs)
    for run in scored:
        models = client.search_logged_models(
            [sweep.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}' AND name = '{part}'")
        if models:
            return Candidate(run.info.run_id, run.info.run_name, run.data.metrics[metric],
                             models[0].model_id, models[0].artifact_location,
                             {k: run.data.params.get(k, "") for k in keys},
                             run.data.params.get("conditional") == "True")
        if run is scored[0]:
            print(f"note: the best run {run.info.run_name} has no {part} model; trying the next")
    raise LookupProblem(f"no finished run of sweep {sweep.parent.info.run_name!r} has a {part} model")


def _champion(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _check_owner(client: MlflowClient, name: str, experiment: str, part: str) -> bool:
    """True if the registered model exists (and is ours); LookupProblem if it belongs to others."""
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return False
    owner = model.tags.get(tags.OWNER)
    if owner != experiment:
        raise LookupProblem(
            f"registered model {name!r} already exists and is not the {part} of experiment "
            f"{experiment!r} (its {tags.OWNER} tag is {owner!r}); choose another name with --name")
    return True


def _refuse_if_not_better(candidate: Candidate, current: ModelVersion, metric: str, mode: str) -> None:
    held = current.tags.get("metric_value")
    if held is None or current.tags.get("metric") != metric:
        return  # ranked by another metric: nothing to compare
    if not objective.is_better(candidate.value, float(held), mode):
        raise LookupProblem(
            f"not promoted: the candidate {candidate.run_name} has {metric} {candidate.value:.4g}, "
            f"the champion (version {current.version}) has {float(held):.4g}, which is at least as "
            f"good ({mode}). Use --force to promote anyway.")


def last_picture(client: MlflowClient, run_id: str, folder: str) -> str | None:
    """The run's picture of its last epoch (such as samples/epoch_NNN.png) as a `runs:/` URI, or None."""
    files = sorted(a.path for a in client.list_artifacts(run_id, folder) if a.path.endswith(".png"))
    return f"runs:/{run_id}/{files[-1]}" if files else None


def describe(candidate: Candidate, sweep: Sweep, metric: str, mode: str, picture_folder: str,
             picture: str | None) -> str:
    """The version's description on the Models page: why it is the champion, and where it came from."""
    lines = [f"**{metric} {candidate.value:.4g}** ({objective.better(mode)} is better): the best finished "
             f"trial of its sweep by {metric}.", "",
             f"- sweep: `{sweep.parent.info.run_name}` (run `{sweep.parent.info.run_id}`), "
             f"experiment `{sweep.experiment_name}`",
             f"- trial: `{candidate.run_name}` (run `{candidate.run_id}`)"]
    if candidate.params:
        lines.append("- params: " + ", ".join(f"{k}={v}" for k, v in candidate.params.items()))
    if picture:
        what = PICTURE_WORDS.get(picture_folder, picture_folder)
        lines.append(f"- {what} of its last epoch: `{picture}`")
    return "\n".join(lines)


@dataclass
class Promotion:
    name: str
    part: str
    conditional: bool  # a generator that takes class labels
    message: str


def promote(client: MlflowClient, sweep: Sweep, name: str, metric: str, mode: str, force: bool) -> Promotion:
    """Register the sweep's best model (its generator or classifier) and point @champion at it."""
    spec = trainer_of(sweep)
    part = spec.promoted
    candidate = best_candidate(client, sweep, metric, mode, part)
    exists = _check_owner(client, name, sweep.experiment_name, part)
    current = _champion(client, name) if exists else None
    if current is not None and not force:
        _refuse_if_not_better(candidate, current, metric, mode)
    if not exists:
        client.create_registered_model(
            name, tags={tags.OWNER: sweep.experiment_name},
            description=f"The {part}s promoted from sweeps of {sweep.experiment_name}")
    # The logged model's own location as source, with its run and id: a `models:/<id>` source
    # makes a local (sqlite) registry look the id up in the process-wide store.
    picture = last_picture(client, candidate.run_id, spec.picture)
    version = client.create_model_version(
        name, candidate.location, run_id=candidate.run_id, model_id=candidate.model_id, tags={
            "metric": metric, "metric_value": repr(candidate.value), "mode": mode,
            "sweep_run_id": sweep.parent.info.run_id, "sweep_run_name": sweep.parent.info.run_name,
            "run_id": candidate.run_id, "run_name": candidate.run_name,
            "params": json.dumps(candidate.params),
            **({spec.picture: picture} if picture else {})},
        description=describe(candidate, sweep, metric, mode, spec.picture, picture))
    _note_version(client, candidate.model_id, version)
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS, current.version)
    client.set_registered_model_alias(name, CHAMPION, version.version)
    replaced = f", replacing version {current.version} (now @{PREVIOUS})" if current else ""
    message = (f"promoted {candidate.run_name} ({metric} {candidate.value:.4g}) as {name} version "
               f"{version.version} @{CHAMPION}{replaced}")
    return Promotion(name, part, candidate.conditional, message)


def _note_version(client: MlflowClient, model_id: str, version: ModelVersion) -> None:
    """List the version on its logged model, as `mlflow.register_model` does (a server does it
    itself, a local store does not): the UI links the two through this tag."""
    versions_tag = library_internals.model_versions_tag()
    noted = json.loads(client.get_logged_model(model_id).tags.get(versions_tag, "[]"))
    entry = {"name": version.name, "version": str(version.version)}
    if entry not in [{"name": v.get("name"), "version": str(v.get("version"))} for v in noted]:
        client.set_logged_model_tags(model_id, {versions_tag: json.dumps([*noted, entry])})


def next_steps(promotion: Promotion, tracking_flag: str) -> list[str]:
    """The commands that use a new champion generator (none for a classifier), each with the
    `--tracking-uri` flag of this store."""
    if promotion.part != "generator":
        return []
    name, model = promotion.name, f"models:/{promotion.name}@{CHAMPION}"
    sample = f"sample from it: python -m orchestrator generate {model} --out grid.png{tracking_flag}"
    if promotion.conditional:
        use = (f"augment a classifier's training data with it: python -m orchestrator sweep "
               f"search_spaces/augment_cifar10.yaml --set generator={model}{tracking_flag}")
    else:
        use = (f"train a classifier from its discriminator: python -m orchestrator sweep "
               f'search_spaces/transfer_freeze_mnist.yaml --set "source={{champion: {name}, '
               f'part: discriminator}}"{tracking_flag}')
    return [sample, use]


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
