"""The Ray Tune side of a sweep: the Tuner of a space, with its searcher, scheduler, resources,
storage, failure policy and callbacks, and how its trials are named."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from functools import partial

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

from orchestrator.space.collapse import Stop
from orchestrator.space.run_names import trial_label
from orchestrator.space.search_space import SearchSpace
from orchestrator.sweep import checkpoint_storage, warm_start
from orchestrator.sweep.checkpoint_rotation import CheckpointRotation
from orchestrator.sweep.trial import make_trainable

TIME_ATTR = "epoch"  # schedulers count the trainer's epochs, which survive retries and resumes


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
    first = [] if space.sampler.type == "grid" else [space.optuna_point(entry) for entry in space.start_from]
    search = OptunaSearch(space=space.define_by_run, metric=metric, mode=mode, sampler=space.optuna_sampler(),
                          points_to_evaluate=first, storage=warm_start.storage(space, history),
                          study_name=space.name)
    return ConcurrencyLimiter(search, max_concurrent=space.max_concurrent)


def tuner(space: SearchSpace, settings: SweepSettings, callbacks: list[tune.Callback],
          history: warm_start.History | None = None) -> tune.Tuner:
    objectives = dict(zip(space.metrics, space.modes, strict=True))
    trainable = tune.with_resources(make_trainable(space.trainer, objectives, space.resources.gpu),
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
        path = checkpoint_storage.join(settings.storage, settings.tune_name)
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


def tune_name(space: SearchSpace) -> str:
    return f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"


