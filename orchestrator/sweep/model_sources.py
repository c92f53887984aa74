"""Trained models that a space starts from (a `transfer` sweep's discriminator, an `augment` sweep's
generator): looked up once, on the driver, before Ray starts, and copied into the sweep's storage,
where every trial reads them.

Trials never open the tracking store (one writer: the driver), and a source that is missing fails
the same way every time. So it is found here, once: a missing or misspelt one stops the sweep with
exit 2, naming the key and the URI, before anything is written.

The forms a source may take: orchestrator/space/source_forms.py.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import SpaceError
from orchestrator.space.search_space import SearchSpace
from orchestrator.space.source_forms import CHAMPION, REGISTERED, URI
from orchestrator.space.values import shown
from trainers import catalog
from trainers.config import ConfigError


@dataclass(frozen=True)
class Source:
    key: str  # the config key (source, generator)
    given: str  # as the space or --set wrote it
    resolved: str  # what it named when the sweep started: version, run, part
    local: Path  # an MLflow model folder on the driver, ready to copy into the storage


def wanted(space: SearchSpace) -> dict[str, str]:
    """The model inputs of the space's trainer that its fixed values set: key -> part."""
    inputs = catalog.get(space.trainer).model_inputs
    return {key: part for key, part in inputs.items() if space.fixed.get(key) is not None}


def resolve(space: SearchSpace, tracking_uri: str, workdir: Path) -> list[Source]:
    """Find every source of the space in the tracking store and download it into workdir;
    SpaceError (exit 2) naming the key and the URI for one that is missing or not the right part."""
    return [_resolve(space, tracking_uri, key, part, workdir / key) for key, part in wanted(space).items()]


def _reader(space: SearchSpace, tracking_uri: str, key: str):
    """A client of the tracking store, which must exist (looking a source up creates nothing) and
    accept this process's credentials."""
    from orchestrator.tracking import mlflow_store

    database = mlflow_store.sqlite_path(tracking_uri)
    if database is not None and not database.exists():
        raise SpaceError(space.path, space.field_of(key), f"{shown(space.fixed[key])}: the tracking store "
                         f"{tracking_uri} does not exist. Pass the --tracking-uri of the sweep that made it")
    return mlflow_store.connect(tracking_uri, create=False)


def _resolve(space: SearchSpace, tracking_uri: str, key: str, part: str, folder: Path) -> Source:
    from mlflow.exceptions import MlflowException

    value = space.fixed[key]
    given = shown(value)

    def fail(message: str) -> SpaceError:
        return SpaceError(space.path, space.field_of(key), f"{given}: {message}")

    if isinstance(value, str) and not URI.match(value):  # a local folder: no tracking store involved
        return Source(key, given, str(Path(value).expanduser().resolve()),
                      _checkpoint_as_model(value, part, key, folder, fail))
    client = _reader(space, tracking_uri, key)
    try:
        if isinstance(value, dict):
            uri, resolved = _champion_part(client, value[CHAMPION], value.get("part", part), fail)
        elif match := REGISTERED.match(value):
            uri, resolved = value, _registered(client, match, fail)
        elif value.startswith("runs:/"):
            uri, resolved = value, _logged_by_run(client, value)
        else:  # s3://..., mlflow-artifacts:/...: an artifact location
            uri, resolved = value, value
        local = _download(client, uri, folder, fail)
    except MlflowException as err:
        raise fail(f"not found in {tracking_uri} ({err.message})") from None
    _check_part(local, part, key, fail)
    return Source(key, given, resolved, local)


def _champion_part(client, name: str, part: str, fail) -> tuple[str, str]:
    """The logged model `part` of the run that made name@champion."""
    version = _version(client, name, CHAMPION, fail)
    run = client.get_run(version.run_id)
    found = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{version.run_id}' AND name = '{part}'")
    if not found:
        raise fail(f"the run of {name}@{CHAMPION} ({run.info.run_name}, {version.run_id}) logged no {part}")
    what = f"{name}@{CHAMPION}: version {version.version}, run {version.run_id}, its {part}"
    return found[0].model_uri, what


def _registered(client, match: re.Match, fail) -> str:
    name = match["name"]
    if match["alias"]:
        version = _version(client, name, match["alias"], fail)
    else:
        version = client.get_model_version(name, match["version"])
    return f"{name} version {version.version}, run {version.run_id}"


def _version(client, name: str, alias: str, fail):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        known = [m.name for m in client.search_registered_models(max_results=50)]
        listed = ", ".join(known) or "none yet"
        raise fail(f"no registered model {name!r} with alias @{alias} (registered models: {listed}). "
                   "Promote one first: python -m orchestrator promote <experiment>") from None


def _logged_by_run(client, uri: str) -> str:
    run_id, _, path = uri[len("runs:/"):].partition("/")
    run = client.get_run(run_id)  # MlflowException (not found) is reported by the caller
    return f"run {run.info.run_name} ({run_id}), {path}"


def _download(client, uri: str, folder: Path, fail) -> Path:
    from orchestrator.registry import stored_models

    local = stored_models.download(client, uri, folder)  # from this store, not the process-wide one
    if not (Path(local) / "MLmodel").is_file():
        raise fail("this is not an MLflow model (it has no MLmodel file)")
    return Path(local)


def _check_part(local: Path, part: str, key: str, fail) -> None:
    """Load it once here: a generator given where a discriminator is wanted fails now, not in every trial."""
    from trainers import sources

    try:
        sources.load_gan_model(str(local), part, key)
    except ConfigError as err:
        raise fail(str(err).replace(repr(str(local)), "it")) from None


def _checkpoint_as_model(path: str, part: str, key: str, folder: Path, fail) -> Path:
    """A gan/dcgan checkpoint folder (or a saved MLflow model) as an MLflow model folder, like every
    other source."""
    import mlflow

    from trainers import sources

    if not Path(path).expanduser().exists():
        raise fail("no such file or folder (a source is runs:/..., models:/..., {champion: ...} or a "
                   "checkpoint folder)")
    try:
        model = sources.load_gan_model(str(Path(path).expanduser()), part, key)
    except ConfigError as err:
        raise fail(str(err)) from None
    mlflow.pytorch.save_model(model, str(folder), serialization_format="pickle", pip_requirements=["torch"])
    return folder


def stage(space: SearchSpace, sources: list[Source], place: str) -> SearchSpace:
    """Copy each source into the storage folder `place`; the space whose fixed values name the copies."""
    from orchestrator.sweep import checkpoint_storage

    fixed = dict(space.fixed)
    for source in sources:
        destination = f"{place.rstrip('/')}/{source.key}"
        checkpoint_storage.upload(source.local, destination)
        fixed[source.key] = destination
    return dataclasses.replace(space, fixed=fixed)

