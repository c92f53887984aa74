"""`sweep --warm-start`: the finished trials of the experiment's earlier sweeps, read back from MLflow,
handed to Optuna as completed trials of today's space, so that ten sweeps of 8 trials learn like one of 80.

Ray's OptunaSearch takes `evaluated_rewards` only with a dict space, not with the define-by-run function
that conditional params need. It does open an existing study, with its trials, from the `storage` and
`study_name` it is given (create_study(load_if_exists=True)), and pickles it with its own state: so the
trials go into a study of an in-memory storage, and --resume restores them like the sweep's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import optuna
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from orchestrator.space import objective
from orchestrator.space.search_space import SearchSpace, param_from_text
from orchestrator.space.values import choice_label, fit_value
from orchestrator.tracking import runs, tags

NOTHING_TO_LEARN = {  # sampler -> why it would learn nothing from earlier trials
    "random": "draws every trial on its own",
    "grid": "runs the points of its grid whatever came before",
    "cmaes": "learns only from the generations it sampled itself",
    "nsga2": "breeds each generation from the previous one of its own study",
}


@dataclass
class History:
    """What a sweep learns from: earlier trials as Optuna trials of today's space."""

    trials: list[optuna.trial.FrozenTrial]
    sweeps: list[str]  # the parent runs of the sweeps they came from, oldest first
    skipped: int  # finished trials whose params fall outside today's space
    earlier: int  # sweeps of the experiment before this one, with or without usable trials
    other_evaluator: int = 0  # finished trials scored by another evaluator network than today's
    other_sweeps: list[str] = field(default_factory=list)  # names of sweeps skipped whole for it

    def line(self) -> str:
        if not self.earlier:
            return "warm start: no earlier sweep of this experiment to learn from; this one starts cold"
        line = (f"warm start: {len(self.trials)} trials from {len(self.sweeps)} earlier sweeps "
                f"({self.skipped} skipped: their params fall outside this space")
        if self.other_evaluator:
            named = ", ".join(self.other_sweeps[:5]) + (" ..." if len(self.other_sweeps) > 5 else "")
            line += (f"; {self.other_evaluator} skipped: scored by another evaluator network, whose FID is "
                     f"not comparable" + (f"; whole sweeps: {named}" if named else ""))
        return line + ")"

    def tags(self) -> dict[str, str]:
        if not self.sweeps:
            return {}
        return tags.warm_start(self.sweeps, len(self.trials), self.skipped, self.other_evaluator)


def problem(space: SearchSpace, resume: bool) -> str | None:
    """Why --warm-start cannot apply to this sweep (checked before anything starts), or None."""
    if resume:
        return ("--warm-start with --resume: a resumed sweep continues with the history its searcher saved. "
                "Leave out one of them")
    if space.is_pbt:
        return (f"--warm-start: {space.path} uses scheduler pbt, which samples its own population and takes "
                "no earlier trials. Leave --warm-start out, or use scheduler asha with sampler tpe")
    if why := NOTHING_TO_LEARN.get(space.sampler.type):
        return (f"--warm-start: {space.path} uses sampler {space.sampler.type}, which {why}: earlier trials "
                "would teach it nothing. Leave --warm-start out, or use sampler tpe")
    return None


def load(client: MlflowClient, experiment_id: str, space: SearchSpace,
         evaluators: set[str] | None = None) -> History:
    """The finished trials (stopped early included, as Tune tells Optuna) with a finite final metric of
    every sweep of the experiment so far, oldest first; those that do not fit `space`, and, given
    the digests of today's evaluator networks, those scored by another network, are only counted."""
    parents = runs.sweep_runs(client, [experiment_id], newest_first=False)
    distributions = space.optuna_distributions()
    history = History([], [], 0, len(parents))
    for parent in parents:
        before, scored_elsewhere = len(history.trials), 0
        trials = runs.children(client, experiment_id, parent.info.run_id)
        for run in sorted(trials, key=lambda r: r.info.start_time):
            value = run.data.metrics.get(space.primary_metric)
            if run.info.status != "FINISHED" or value is None or not math.isfinite(value):
                continue
            if evaluators and run.data.tags.get(tags.EVALUATOR) not in evaluators:
                history.other_evaluator += 1
                scored_elsewhere += 1
                continue
            fitted = _as_suggested(space, distributions, run)
            if fitted is None:
                history.skipped += 1
                continue
            history.trials.append(optuna.trial.create_trial(
                params=fitted.params, distributions=fitted.distributions, value=value,
                user_attrs={"mlflow_run_id": run.info.run_id}))
        if len(history.trials) > before:
            history.sweeps.append(parent.info.run_id)
        elif scored_elsewhere:
            history.other_sweeps.append(parent.info.run_name)
    return history


def _as_suggested(space: SearchSpace, distributions: dict[str, optuna.distributions.BaseDistribution],
                  run: Run) -> optuna.trial.FixedTrial | None:
    """The run's params as the space would suggest them (its `when`s decide which), or None when one
    of those is missing from the run or outside the space. Params are strings in MLflow."""
    values = {}
    for name, text in run.data.params.items():
        if name in distributions:
            try:
                value = fit_value(space.params[name], param_from_text(text, distributions[name]))
                values[name] = choice_label(value)  # as Optuna holds it
            except (ValueError, StopIteration):  # outside; fine if the space does not suggest it here
                continue
    trial = optuna.trial.FixedTrial(values)
    try:
        space.define_by_run(trial)
    except ValueError:  # FixedTrial: a param the space suggests has no value
        return None
    return trial


def storage(space: SearchSpace, history: History | None) -> optuna.storages.BaseStorage | None:
    """An in-memory storage whose study `space.name` holds the history's trials, for
    OptunaSearch(storage=..., study_name=space.name); None when there is nothing to learn from."""
    if history is None or not history.trials:
        return None
    store = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=store, study_name=space.name,
                                directions=[objective.direction(m) for m in space.modes])
    study.add_trials(history.trials)
    return store
