"""The model registry: promote a sweep's best model to `@champion`, roll back, sample from a generator.

A GAN sweep's trials log a `generator` (registered as `<experiment>-generator`), a classifier,
transfer or augment sweep's a `classifier` (`<experiment>-classifier`). Aliases carry the state:
`champion` is the version in use, `previous` the one it replaced. A registered model made here is
tagged `gansweep.experiment`, so a name already used by an unrelated model is refused rather than
overwritten.

Every call goes through the client of the command's tracking URI: MLflow's fluent helpers
(`mlflow.register_model`, the `models:/` resolver of its downloads) use the process-wide URI,
which is ./mlflow.db whatever --tracking-uri said.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from orchestrator import tags
from orchestrator.errors import LookupProblem
from orchestrator.outcome import COLLAPSED, can_be_best
from orchestrator.runs import Sweep, children, varying_params
from trainers.catalog import GAN_TRAINERS

CHAMPION, PREVIOUS = "champion", "previous"
GENERATOR, CLASSIFIER = "generator", "classifier"  # the logged model a sweep's trials offer


def model_part(sweep: Sweep) -> str:
    """The logged model that `promote` registers from this sweep (sweeps older than the trainer
    tag were all GAN sweeps)."""
    trainer = sweep.parent.data.tags.get(tags.TRAINER, "dcgan")
    return GENERATOR if trainer in GAN_TRAINERS else CLASSIFIER


def registered_name(sweep: Sweep) -> str:
    return f"{sweep.experiment_name}-{model_part(sweep)}"


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
    scored.sort(key=lambda r: r.data.metrics[metric], reverse=mode == "max")
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
    better = candidate.value < float(held) if mode == "min" else candidate.value > float(held)
    if not better:
        raise LookupProblem(
            f"not promoted: the candidate {candidate.run_name} has {metric} {candidate.value:.4g}, "
            f"the champion (version {current.version}) has {float(held):.4g}, which is at least as "
            f"good ({mode}). Use --force to promote anyway.")


PICTURE_TAG = {GENERATOR: "samples", CLASSIFIER: "confusion_matrix"}  # the run's per-epoch picture folder


def last_picture(client: MlflowClient, run_id: str, part: str) -> str | None:
    """The run's picture of its last epoch (samples/epoch_NNN.png) as a `runs:/` URI, or None."""
    folder = PICTURE_TAG[part]
    files = sorted(a.path for a in client.list_artifacts(run_id, folder) if a.path.endswith(".png"))
    return f"runs:/{run_id}/{files[-1]}" if files else None


def describe(candidate: Candidate, sweep: Sweep, metric: str, mode: str, part: str,
             picture: str | None) -> str:
    """The version's description on the Models page: why it is the champion, and where it came from."""
    better = "lower" if mode == "min" else "higher"
    lines = [f"**{metric} {candidate.value:.4g}** ({better} is better): the best finished trial of its sweep "
             f"by {metric}.", "",
             f"- sweep: `{sweep.parent.info.run_name}` (run `{sweep.parent.info.run_id}`), "
             f"experiment `{sweep.experiment_name}`",
             f"- trial: `{candidate.run_name}` (run `{candidate.run_id}`)"]
    if candidate.params:
        lines.append("- params: " + ", ".join(f"{k}={v}" for k, v in candidate.params.items()))
    if picture:
        what = "sample grid" if part == GENERATOR else "confusion matrix"
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
    part = model_part(sweep)
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
    picture = last_picture(client, candidate.run_id, part)
    version = client.create_model_version(
        name, candidate.location, run_id=candidate.run_id, model_id=candidate.model_id, tags={
            "metric": metric, "metric_value": repr(candidate.value), "mode": mode,
            "sweep_run_id": sweep.parent.info.run_id, "sweep_run_name": sweep.parent.info.run_name,
            "run_id": candidate.run_id, "run_name": candidate.run_name,
            "params": json.dumps(candidate.params),
            **({PICTURE_TAG[part]: picture} if picture else {})},
        description=describe(candidate, sweep, metric, mode, part, picture))
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
    noted = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
    entry = {"name": version.name, "version": str(version.version)}
    if entry not in [{"name": v.get("name"), "version": str(v.get("version"))} for v in noted]:
        client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*noted, entry])})


def next_steps(promotion: Promotion, tracking_flag: str) -> list[str]:
    """The commands that use a new champion generator (none for a classifier), each with the
    `--tracking-uri` flag of this store."""
    if promotion.part != GENERATOR:
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


def model_location(client: MlflowClient, model_uri: str) -> str:
    """Where a model's files are, found with this client.

    MLflow 3.17 resolves `models:/...`, and `runs:/<run_id>/<name>` of a logged model, with the
    process-wide registry whatever tracking URI it is given (ModelsArtifactRepository).
    """
    if model_uri.startswith("models:/"):
        from mlflow.store.artifact.utils.models import get_model_name_and_version

        found = get_model_name_and_version(client, model_uri)  # (name, version) or (model id,)
        if len(found) == 2:
            return client.get_model_version_download_uri(*found)
        return client.get_logged_model(found[0]).artifact_location
    if model_uri.startswith("runs:/"):
        run_id, _, name = model_uri[len("runs:/"):].partition("/")
        logged = client.search_logged_models(
            [client.get_run(run_id).info.experiment_id],
            filter_string=f"source_run_id = '{run_id}' AND name = '{name}'")
        if logged:
            return logged[0].artifact_location
    return model_uri  # the run's own artifacts, or a store's URI: no lookup


def download(client: MlflowClient, model_uri: str, folder: Path) -> Path:
    """A model's files, copied into folder from the client's store."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_location(client, model_uri),
                                                    dst_path=str(folder), tracking_uri=client.tracking_uri))


def generate(client: MlflowClient, model_uri: str, n: int, out: Path, seed: int = 0) -> tuple[int, int]:
    """A sample grid from a generator model; one row per class for a conditional one."""
    import mlflow
    import torch
    from torchvision.utils import save_image

    with tempfile.TemporaryDirectory(prefix="gansweep-model-") as folder:
        try:
            generator = mlflow.pytorch.load_model(str(download(client, model_uri, Path(folder))),
                                                  map_location="cpu")
        except MlflowException as err:
            raise LookupProblem(f"cannot load {model_uri} from {client.tracking_uri}: {err.message}") from err
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
