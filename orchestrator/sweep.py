"""Build and run the Ray Tune sweep of a search space: searcher, scheduler, resources, storage,
failure policy, and the driver-side callbacks (MLflow, progress)."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import optuna
import ray
from ray import tune
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
    TrialScheduler,
)
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from orchestrator import cluster_resources, model_sources, store, summary, tags, tracking, warm_start
from orchestrator import storage as storages
from orchestrator.collapse import Stop
from orchestrator.errors import UsageError
from orchestrator.prepare import prepare_nodes
from orchestrator.progress import InterruptWatch, ProgressCallback, interrupted
from orchestrator.rotation import CheckpointRotation
from orchestrator.space import SearchSpace, load_space, trial_label
from orchestrator.trial import make_trainable
from trainers import catalog

# Our progress lines and MLflow replace Tune's console tables.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

ADDRESS_TIMEOUT_S = 5.0
TIME_ATTR = "epoch"  # schedulers count the trainer's epochs, which survive retries and resumes
SOURCES_DIR = "sources"  # beside Tune's trial folders: the models the trials start from


@dataclass
class SweepSettings:
    storage: str  # a local folder or an s3:// URI, shared by every node
    tune_name: str
    time_budget_s: float | None = None
    resume: bool = False


def scheduler(space: SearchSpace) -> TrialScheduler:
    """The space's scheduler; metric and mode come from the TuneConfig."""
    spec = space.scheduler
    if len(space.metrics) > 1 or spec.type == "fifo":
        return FIFOScheduler()
    if spec.type == "asha":
        return ASHAScheduler(time_attr=TIME_ATTR, max_t=spec.max_t, grace_period=spec.grace_period,
                             reduction_factor=spec.reduction_factor)
    if spec.type == "median":
        return MedianStoppingRule(time_attr=TIME_ATTR, grace_period=spec.grace_period,
                                  min_samples_required=3)
    return PopulationBasedTraining(time_attr=TIME_ATTR, perturbation_interval=spec.perturbation_interval,
                                   hyperparam_mutations=space.pbt_mutations(),
                                   # synchronous: a clone comes from the same epoch, so MLflow steps stay
                                   # continuous in the run of the trial that exploits it
                                   custom_explore_fn=space.clip_to_bounds, synch=True)


def searcher(space: SearchSpace, history: warm_start.History | None = None):
    """Optuna through Tune's OptunaSearch (define-by-run: conditionals work), trying the space's
    start_from first and knowing the earlier trials of `history` (--warm-start); for PBT, which takes no
    searcher, Tune's own sampling, with start_from as part of the initial population.

    OptunaSearch enqueues start_from (study.enqueue_trial: the params an entry leaves out are sampled);
    a grid's sampler runs them first itself (space.py). Tune pickles the searcher with the study, so
    --resume does not run them again."""
    if space.is_pbt:
        return BasicVariantGenerator(points_to_evaluate=copy.deepcopy(space.start_from),
                                     max_concurrent=space.max_concurrent)
    metric = space.metrics if len(space.metrics) > 1 else space.primary_metric
    mode = space.modes if len(space.modes) > 1 else space.primary_mode
    first = [] if space.sampler.type == "grid" else copy.deepcopy(space.start_from)
    search = OptunaSearch(space=space.define_by_run, metric=metric, mode=mode, sampler=space.optuna_sampler(),
                          points_to_evaluate=first, storage=warm_start.storage(space, history),
                          study_name=space.name)
    return ConcurrencyLimiter(search, max_concurrent=space.max_concurrent)


def tuner(space: SearchSpace, settings: SweepSettings, callbacks: list[tune.Callback],
          history: warm_start.History | None = None) -> tune.Tuner:
    objectives = dict(zip(space.metrics, space.modes, strict=True))
    trainable = tune.with_resources(make_trainable(space.trainer, objectives),
                                    {"cpu": space.resources.cpu, "gpu": space.resources.gpu})
    run_config = tune.RunConfig(
        name=settings.tune_name,
        storage_path=settings.storage,
        failure_config=tune.FailureConfig(max_failures=space.max_failures),
        # PBT copies other trials' checkpoints: keep more of them around.
        # Tune keeps every checkpoint; CheckpointRotation deletes them once --resume cannot need them.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        callbacks=[*callbacks, CheckpointRotation(keep=4 if space.is_pbt else 2)],  # PBT copies others
        stop=Stop(space.stop_when) if space.stop_when else None,  # collapsed trials, whatever the scheduler
        verbose=0,
    )
    if settings.resume:
        # Tune restores its own state (trials, searcher, scheduler, the callbacks as pickled).
        path = storage_join(settings.storage, settings.tune_name)
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    single = len(space.metrics) == 1
    tune_config = tune.TuneConfig(
        metric=space.primary_metric if single else None,
        mode=space.primary_mode if single else None,
        search_alg=searcher(space, history),  # it also keeps max_concurrent trials at a time
        scheduler=scheduler(space),
        num_samples=space.num_samples,
        time_budget_s=settings.time_budget_s,
        reuse_actors=space.reuse_actors,  # no worker start between trials: slots stay busy
        trial_name_creator=partial(trial_name, counts_from_zero=space.is_pbt),
        trial_dirname_creator=partial(trial_dirname, counts_from_zero=space.is_pbt),
    )
    param_space = space.tune_param_space() if space.is_pbt else None
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config,
                      param_space=param_space)


def trial_name(trial, counts_from_zero: bool) -> str:
    """The trial's label (t001, t002... in the order Tune created them), given once here; Tune
    keeps it (`str(trial)`) across retries and --resume, and everything else reads it from there.

    Tune's experiment tag starts with the trial's number, counted from 1 by a searcher and from 0
    by Tune's own sampling (PBT)."""
    number = int(str(trial.experiment_tag).split("_", 1)[0])
    return trial_label(number + 1 if counts_from_zero else number)


def trial_dirname(trial, counts_from_zero: bool) -> str:
    return f"{trial_name(trial, counts_from_zero)}_{trial.trial_id}"


def storage_join(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}" if "://" in storage else str(Path(storage) / name)


def default_storage() -> str:
    """$GANSWEEP_STORAGE (cluster.yaml sets it on every node to the bucket's sweeps/), else ./sweeps."""
    return os.environ.get("GANSWEEP_STORAGE") or str(Path("sweeps").resolve())


def tune_name(space: SearchSpace) -> str:
    return f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"


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
            if address is not None and (problem := cluster_resources.problem(space)):
                raise UsageError(f"{space.path}: {problem}")
            if address is not None and (problem := storages.shared_problem(settings.storage)):
                raise UsageError(problem)
            place = storage_join(settings.storage, f"{settings.tune_name}/{SOURCES_DIR}")
            space = model_sources.stage(space, sources, place)
            prepare_nodes(space)  # data and evaluator once per node, before any trial
            return fit(space, settings, tracking_uri, parent, sources, warm)
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
        client = store.connect(tracking_uri)
        found = client.get_experiment_by_name(space.name)
        previous = found and tracking.latest_parent(client, found.experiment_id)
        if not previous:
            raise UsageError(f"--resume: experiment {space.name!r} in {tracking_uri} has no sweep to resume")
        parent, recorded = previous.info.run_id, previous.data.tags
        settings = SweepSettings(recorded[tags.STORAGE], recorded[tags.TUNE_NAME], time_budget_s, True)
        space = load_space(space.path, json.loads(recorded.get(tags.OVERRIDES, "{}")))
    else:
        settings = SweepSettings(storage or default_storage(), tune_name(space), time_budget_s)
    store.check(tracking_uri)  # a server that refuses this process's credentials: exit 2 here
    if problem := storages.write_problem(settings.storage):
        raise UsageError(problem)
    return space, settings, parent


def start_ray(address: str | None) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Ray 2.60 turns token auth on for a new local instance (and makes ~/.ray/auth_token) with a
    # warning on every start that a laptop user can do nothing about.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        # "local": a new Ray instance of this sweep's own, even where another one runs on this machine
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                 logging_level="warning")
    except ConnectionError as error:
        raise UsageError(f"--address {address}: {error} {NO_CLUSTER_HINT}") from None


def fit(space: SearchSpace, settings: SweepSettings, tracking_uri: str, parent: str | None,
        sources: list[model_sources.Source], warm: bool = False) -> int:
    """The parent run (new, or reopened by --resume), Tune's run, and the summary or the resume hint."""
    client = store.connect(tracking_uri)
    experiment = tracking.experiment_id(client, tracking_uri, space.name)
    history = warm_start.load(client, experiment, space) if warm else None  # before this sweep's parent
    source_tags = {tag: value for source in sources
                   for tag, value in tags.source(source.key, source.given, source.resolved).items()}
    if parent is not None:  # --resume: the sources it started from, for the runs of new trials
        source_tags = tags.sources_of(client.get_run(parent).data.tags)
        client.update_run(parent, status="RUNNING")
    else:
        parent = tracking.start_parent(client, experiment, space, settings.storage, settings.tune_name,
                                       source_tags, history.tags() if history is not None else {})
    callbacks = [InterruptWatch(),
                 tracking.TrackingCallback(tracking_uri, experiment, parent, space, source_tags),
                 ProgressCallback(space.primary_metric, space.primary_mode, space.num_samples,
                                  settings.time_budget_s, catalog.get(space.trainer).defaults["epochs"])]
    print(f"sweep {settings.tune_name}: {space.num_samples} trials, {space.max_concurrent} at a time; "
          f"checkpoints in {storage_join(settings.storage, settings.tune_name)}", file=sys.stderr)
    for source in sources:
        print(f"{source.key}: {source.given} is {source.resolved}", file=sys.stderr)
    if history is not None:
        print(history.line(), file=sys.stderr)
    try:
        tuner(space, settings, callbacks, history).fit()
    except KeyboardInterrupt:  # a second Ctrl-C, while Tune was saving its state
        interrupted.set()
    except BaseException:
        client.set_terminated(parent, "FAILED")
        raise
    if interrupted.is_set():
        client.set_terminated(parent, "KILLED")
        again = f"python -m orchestrator sweep {space.path} --resume{store.flag(tracking_uri)}"
        print(f"\ninterrupted: the sweep is not complete (no leaderboard yet). Continue it with\n"
              f"  {again}", file=sys.stderr)
        return 130
    summary.finish(client, experiment, parent, space, tracking_uri)
    client.set_terminated(parent, "FINISHED")
    return 0
