"""One `sweep` command from its checks to its leaderboard: what can refuse it before Ray starts,
then Ray, the model sources and the data on every node, the parent run, Tune's run, the summary.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import tempfile
from pathlib import Path

import optuna
import ray

from orchestrator import library_internals
from orchestrator.cluster import node_types
from orchestrator.errors import UsageError
from orchestrator.space.loading import load_space
from orchestrator.space.search_space import SearchSpace
from orchestrator.sweep import checkpoint_storage, model_sources, warm_start
from orchestrator.sweep.node_preparation import prepare_nodes
from orchestrator.sweep.progress import ProgressCallback
from orchestrator.sweep.tuner import SweepSettings, tune_name, tuner
from orchestrator.tracking import mlflow_store, parent_run, runs, summary, tags
from orchestrator.tracking.callback import TrackingCallback
from trainers import catalog

# Our progress lines and MLflow replace Tune's console tables.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

ADDRESS_TIMEOUT_S = 5.0
SOURCES_DIR = "sources"  # beside Tune's trial folders: the models the trials start from
EVALUATORS_DIR = "evaluators"  # and the evaluator networks that score them


NO_CLUSTER_HINT = ("Start a cluster with `ray up cluster.yaml` and run the sweep on its head with --address "
                   "auto, or leave --address out to run on this machine.")


def address_problem(address: str) -> str | None:
    """An address where no Ray cluster answers, found in seconds: `ray.init` would retry for
    a minute or more. 'auto' needs no check: Ray fails at once when it finds no cluster."""
    if address == "auto" or "://" in address:
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return f"--address {address!r}: expected HOST:PORT of a Ray head (such as 10.0.0.5:6379) or 'auto'."
    try:
        socket.create_connection((host, int(port)), timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as error:
        why = error.strerror or type(error).__name__
        return f"--address {address}: no Ray cluster answers there ({why}). {NO_CLUSTER_HINT}"
    return None


def local_resources_problem(space: SearchSpace) -> str | None:
    """Why this machine cannot run one trial of the space, checked before Ray starts (or None)."""
    cpus = os.cpu_count() or 1
    if space.resources.cpu > cpus:
        return (f"resources.cpu: {space.resources.cpu} CPUs per trial, but this machine has {cpus}. "
                f"Lower it, or run on a cluster with --address auto.")
    if space.resources.gpu:
        import torch

        gpus = torch.cuda.device_count()
        if gpus < math.ceil(space.resources.gpu):
            return (f"resources.gpu: {space.resources.gpu} GPU per trial, but this machine has {gpus}. "
                    f"Set gpu: 0 to train on the CPU, or run on a GPU cluster with --address auto.")
    return None


def run(space: SearchSpace, address: str | None, storage: str | None, tracking_uri: str, resume: bool,
        time_budget_s: float | None, warm: bool = False) -> int:
    """One `sweep` invocation: checks, model sources, Ray, MLflow parent run, Tune, summary.
    `warm`: learn from the experiment's earlier sweeps (--warm-start). Returns the exit code."""
    space, settings, parent = checks_before_ray(space, address, storage, tracking_uri, resume, time_budget_s)
    with tempfile.TemporaryDirectory(prefix="gansweep-sources-") as workdir:
        # Looked up before Ray starts: a missing source ends the sweep here, with nothing written.
        sources = [] if resume else model_sources.resolve(space, tracking_uri, Path(workdir))
        start_ray(address)
        try:
            if address is not None and (problem := node_types.problem(space)):
                raise UsageError(f"{space.path}: {problem}")
            if address is not None and (problem := checkpoint_storage.shared_problem(settings.storage)):
                raise UsageError(problem)
            sweep_dir = checkpoint_storage.join(settings.storage, settings.tune_name)
            space = model_sources.stage(space, sources, checkpoint_storage.join(sweep_dir, SOURCES_DIR))
            # the data on every node, and one evaluator network for the whole sweep, before any trial
            space, evaluators = prepare_nodes(space, checkpoint_storage.join(sweep_dir, EVALUATORS_DIR))
            return fit(space, settings, tracking_uri, parent, sources, warm, evaluators)
        finally:
            ray.shutdown()


def checks_before_ray(space: SearchSpace, address: str | None, storage: str | None, tracking_uri: str,
                      resume: bool, time_budget_s: float | None
                      ) -> tuple[SearchSpace, SweepSettings, str | None]:
    """Everything that can refuse the sweep before Ray starts. Returns the space (for --resume: with
    the --set values it started with), the settings, and the parent run that --resume reopens.
    A new sweep opens the tracking store only once every check has passed: a refused sweep leaves
    no experiment and no run behind (and no new mlflow.db)."""
    if address is None and (problem := local_resources_problem(space)):
        raise UsageError(f"{space.path}: {problem}")
    if address is not None and (problem := address_problem(address)):
        raise UsageError(problem)
    parent = None
    if resume:
        if space.overrides:
            raise UsageError("--set cannot change a sweep that is resumed: it continues with the values it "
                             "started with. Leave --set out, or start a new sweep")
        client = mlflow_store.connect(tracking_uri)
        found = client.get_experiment_by_name(space.name)
        previous = found and runs.newest_sweep_run(client, found.experiment_id)
        if not previous:
            raise UsageError(f"--resume: experiment {space.name!r} in {tracking_uri} has no sweep to resume")
        parent, recorded = previous.info.run_id, previous.data.tags
        settings = SweepSettings(recorded[tags.STORAGE], recorded[tags.TUNE_NAME], time_budget_s, True)
        space = load_space(space.path, json.loads(recorded.get(tags.OVERRIDES, "{}")))
    else:
        settings = SweepSettings(storage or checkpoint_storage.default(), tune_name(space), time_budget_s)
    mlflow_store.check(tracking_uri)  # a server that refuses this process's credentials: exit 2 here
    if problem := checkpoint_storage.write_problem(settings.storage):
        raise UsageError(problem)
    return space, settings, parent


def start_ray(address: str | None) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Ray 2.60 turns token auth on for a new local instance (and makes ~/.ray/auth_token) with a
    # warning on every start that a laptop user can do nothing about.
    logging.getLogger(library_internals.TOKEN_SETUP_LOGGER).setLevel(logging.ERROR)
    try:
        # "local": a new Ray instance of this sweep's own, even where another one runs on this machine
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                 logging_level="warning")
    except ConnectionError as error:
        raise UsageError(f"--address {address}: {error} {NO_CLUSTER_HINT}") from None


def fit(space: SearchSpace, settings: SweepSettings, tracking_uri: str, parent: str | None,
        sources: list[model_sources.Source], warm: bool = False, evaluators: dict[str, str] | None = None
        ) -> int:
    """The parent run (new, or reopened by --resume), Tune's run, and the summary or the resume hint.

    Tune catches Ctrl-C itself and returns from `fit()` as if the sweep had ended; the tracking
    callback notes it and ends the parent run KILLED, which is how this tells the two apart."""
    client = mlflow_store.connect(tracking_uri)
    experiment = parent_run.experiment_id(client, tracking_uri, space.name)
    evaluators = evaluators or {}
    # before this sweep's parent run: its trials are not history
    history = warm_start.load(client, experiment, space, set(evaluators.values())) if warm else None
    source_tags = {tag: value for source in sources
                   for tag, value in tags.source(source.key, source.given, source.resolved).items()}
    if parent is not None:  # --resume: the sources it started from, for the runs of new trials
        source_tags = tags.sources_of(client.get_run(parent).data.tags)
        client.update_run(parent, status="RUNNING")
    else:
        prepared = {**(history.tags() if history is not None else {}),
                    **({tags.EVALUATORS: json.dumps(evaluators)} if evaluators else {})}
        parent = parent_run.start(client, experiment, space, settings.storage, settings.tune_name,
                                  source_tags, prepared)
    callbacks = [TrackingCallback(tracking_uri, experiment, parent, space, source_tags),
                 ProgressCallback(space.primary_metric, space.primary_mode, space.num_samples,
                                  settings.time_budget_s, catalog.get(space.trainer).defaults["epochs"])]
    print(f"sweep {settings.tune_name}: {space.num_samples} trials, {space.max_concurrent} at a time; "
          f"checkpoints in {checkpoint_storage.join(settings.storage, settings.tune_name)}", file=sys.stderr)
    for source in sources:
        print(f"{source.key}: {source.given} is {source.resolved}", file=sys.stderr)
    if history is not None:
        print(history.line(), file=sys.stderr)
    try:
        tuner(space, settings, callbacks, history).fit()
    except KeyboardInterrupt:  # a second Ctrl-C, while Tune was saving its state
        client.set_terminated(parent, "KILLED")
    except BaseException:
        client.set_terminated(parent, "FAILED")
        raise
    if client.get_run(parent).info.status == "KILLED":
        again = f"python -m orchestrator sweep {space.path} --resume{mlflow_store.flag(tracking_uri)}"
        print(f"\ninterrupted: the sweep is not complete (no leaderboard yet). Continue it with\n"
              f"  {again}", file=sys.stderr)
        return 130
    summary.finish(client, experiment, parent, space, tracking_uri)
    client.set_terminated(parent, "FINISHED")
    return 0
