"""A validated search space (`SearchSpace`) and what it becomes: an Optuna define-by-run function and
sampler, the distributions of its params, and Tune domains for PBT.

A space is read and checked by `loading.load_space` before Ray is imported (this module never imports
it at top level), so a bad space fails fast with one `SpaceError` naming the file, the field and the
fix, and starts nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna

from orchestrator import library_internals
from orchestrator.errors import SpaceError
from orchestrator.space import run_names
from orchestrator.space.checks import fit_samples
from orchestrator.space.collapse import StopRule
from orchestrator.space.schema import Param, Resources, SamplerSpec, SchedulerSpec
from orchestrator.space.trainer_checks import start_from_problem
from orchestrator.space.values import choice_label, finite_values, listify, shown


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    path: Path
    name: str
    trainer: str
    metrics: list[str]
    modes: list[str]
    num_samples: int
    max_concurrent: int
    resources: Resources
    sampler: SamplerSpec
    scheduler: SchedulerSpec  # type and every field it uses filled in
    max_failures: int
    reuse_actors: bool  # a new trial runs in a finished trial's worker (Tune's reuse_actors)
    stop_when: StopRule | None  # stops collapsed trials (orchestrator/space/collapse.py); None: no rule
    fixed: dict[str, Any]
    params: dict[str, Param]  # ordered so that a `when` refers only to earlier params
    start_from: list[dict[str, Any]]  # configs tried first, in order; a param an entry leaves out is sampled
    content_hash: str  # sha256 of the file bytes, first 12 hex digits
    notes: tuple[str, ...] = ()  # adjustments made while loading (shown by describe)
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # --set KEY=VALUE, applied
    document: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    """The YAML mapping with the overrides applied: the space as it runs (logged with the sweep)."""

    @property
    def is_pbt(self) -> bool:
        """PBT runs without an Optuna searcher: Tune samples its population and mutates it."""
        return self.scheduler.type == "pbt"

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def primary_mode(self) -> str:
        return self.modes[0]

    @property
    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.grid().values())

    def define_by_run(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest each param whose `when` holds; return the fixed values and the list-valued choices
        (Optuna holds those by their labels), which Ray Tune's `OptunaSearch(space=fn)` puts in the
        trial config over what Optuna suggested."""
        chosen: dict[str, Any] = {}
        for name, p in self.params.items():
            if _holds(p.when, chosen):
                chosen[name] = _suggest(trial, name, p)
        lists = {name: value for name, value in chosen.items() if isinstance(value, list)}
        return copy.deepcopy({**self.fixed, **lists})

    def optuna_point(self, values: dict[str, Any]) -> dict[str, Any]:
        """Param values as Optuna holds them (a list choice by its label): a start_from entry to enqueue."""
        return {name: choice_label(value) if name in self.params else value for name, value in values.items()}

    def optuna_sampler(self) -> optuna.samplers.BaseSampler:
        s, samplers = self.sampler, optuna.samplers
        startup = {} if s.n_startup_trials is None else {"n_startup_trials": s.n_startup_trials}
        if s.type == "tpe":
            # constant_liar: trials run in parallel; group: conditional params have their own groups.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return samplers.TPESampler(seed=s.seed, multivariate=True, constant_liar=True,
                                           group=any(p.when for p in self.params.values()), **startup)
        if s.type == "random":
            return samplers.RandomSampler(seed=s.seed)
        if s.type == "grid":
            first = [self.optuna_point(entry) for entry in self.start_from]
            return library_internals.grid_sampler(self.grid(), s.seed, first=first)
        if s.type == "cmaes":  # categorical params fall back to random sampling
            return samplers.CmaEsSampler(seed=s.seed, warn_independent_sampling=False, **startup)
        population = {} if s.n_startup_trials is None else {"population_size": max(2, s.n_startup_trials)}
        return samplers.NSGAIISampler(seed=s.seed, **population)

    def grid(self) -> dict[str, list[Any]]:
        """Every param's finite list of values (for GridSampler); ValueError if one has none."""
        grid = {name: finite_values(p) for name, p in self.params.items()}
        missing = [name for name, values in grid.items() if values is None]
        if missing:
            raise ValueError(f"param {missing[0]!r} has no finite set of values (a float without step)")
        return {name: [choice_label(value) for value in values] for name, values in grid.items()}

    def optuna_distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """Each param's Optuna distribution, the one `define_by_run` suggests from: what
        `optuna.trial.create_trial` needs to rebuild a study from finished trials."""
        return {name: _distribution(p) for name, p in self.params.items()}

    def run_name(self, label: str, config: dict[str, Any], others: Iterable[dict[str, Any]] = ()) -> str:
        """The MLflow run name of the trial labelled `label` with this config, told apart from the
        other trials' configs (run_names.run_name)."""
        return run_names.run_name(label, config, list(self.params), others)

    def field_of(self, key: str | None) -> str:
        """Where this space sets a config key, for an error message: `--set KEY`, `params.KEY` or
        `fixed.KEY`."""
        if key in self.overrides:
            return f"--set {key}"
        return f"params.{key}" if key in self.params else f"fixed.{key or '?'}"

    def tune_param_space(self) -> dict[str, Any]:
        """Fixed values plus Ray Tune sampling domains: PBT's initial population (PBT takes no searcher)."""
        space = copy.deepcopy(self.fixed)
        space.update({name: _tune_domain(p) for name, p in self.params.items()})
        return space

    def pbt_mutations(self) -> dict[str, Any]:
        """PopulationBasedTraining's hyperparam_mutations: value lists (PBT shifts one step), or
        domains (PBT resamples or scales by 0.8/1.2: pass `clip_to_bounds` as custom_explore_fn)."""
        space = self.tune_param_space()
        domains = {name: space[name] for name in self.params}
        return {name: list(d.categories) if hasattr(d, "categories") else d for name, d in domains.items()}

    def clip_to_bounds(self, config: dict[str, Any]) -> dict[str, Any]:
        """Numeric params put back inside [low, high] (ints rounded) after a PBT perturbation."""
        config = dict(config)
        for name, p in self.params.items():
            if p.type != "categorical" and isinstance(config.get(name), (int, float)):
                value = min(max(config[name], p.low), p.high)
                config[name] = int(round(value)) if p.type == "int" else float(value)
        return config

    def describe(self) -> str:
        """A short summary for `--dry-run`."""
        sched = self.scheduler.model_dump(exclude_none=True)
        sampler = "none (pbt samples its own population)" if sched["type"] == "pbt" else (
            f"{self.sampler.type} (seed {self.sampler.seed})")
        metrics = zip(self.metrics, self.modes, strict=True)
        lines = [
            f"space      {self.path} (sha256 {self.content_hash})",
            f"experiment {self.name}",
            f"trainer    {self.trainer}",
            "metric     " + ", ".join(f"{m} ({mode})" for m, mode in metrics),
            f"trials     {self.num_samples}, {self.max_concurrent} at a time, each cpu {self.resources.cpu:g}"
            f" gpu {self.resources.gpu:g}, retried "
            + ("forever" if self.max_failures < 0 else f"up to {self.max_failures} times"),
            f"sampler    {sampler}",
            f"scheduler  {sched.pop('type')} ({', '.join(f'{k} {v:g}' for k, v in sched.items())})",
            f"stop when  {self.stop_when or 'never (no collapse rule)'}",
            "fixed      " + (", ".join(f"{k}={shown(v)}" for k, v in self.fixed.items()) or "-"),
            "start_from " + ("; ".join(", ".join(f"{k}={shown(v)}" for k, v in entry.items())
                                       for entry in self.start_from) or "-"),
            "params" + ("" if self.params else "     -"),
        ]
        width = max((len(name) for name in self.params), default=0)
        lines += [f"  {name:<{width}}  {_range(p)}" for name, p in self.params.items()]
        return "\n".join(lines + [f"note: {note}" for note in self.notes])

    def with_overrides(self, num_samples: int | None = None,
                       max_concurrent: int | None = None) -> SearchSpace:
        """The CLI's --num-samples / --max-concurrent over the YAML's values."""
        for field, value in (("num_samples", num_samples), ("max_concurrent", max_concurrent)):
            if value is not None and value < 1:
                raise SpaceError(self.path, field, f"override {value} must be >= 1. Pass a positive number")
        count, note = fit_samples(self.path, self.sampler.type, self.scheduler.type, self.params,
                                  num_samples or self.num_samples, explicit=True)
        if problem := start_from_problem(len(self.start_from), count, "--num-samples"):
            raise SpaceError(self.path, "start_from", problem)
        return dataclasses.replace(self, num_samples=count, notes=self.notes + ((note,) if note else ()),
                                   max_concurrent=max_concurrent or self.max_concurrent)


def _holds(when: dict[str, Any], chosen: dict[str, Any]) -> bool:
    return all(k in chosen and chosen[k] in listify(v) for k, v in when.items())


def _suggest(trial: optuna.Trial, name: str, p: Param) -> Any:
    if p.type == "categorical":
        label = trial.suggest_categorical(name, [choice_label(c) for c in p.choices or ()])
        return next(c for c in p.choices or () if choice_label(c) == label)
    if p.type == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    step = None if p.step is None else float(p.step)
    return trial.suggest_float(name, float(p.low), float(p.high), step=step, log=p.log)


def _distribution(p: Param) -> optuna.distributions.BaseDistribution:
    """What `_suggest` draws from (the same arguments, so trial.distributions compare equal)."""
    dist = optuna.distributions
    if p.type == "categorical":
        return dist.CategoricalDistribution([choice_label(c) for c in p.choices or ()])
    if p.type == "int":
        return dist.IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
    step = None if p.step is None else float(p.step)
    return dist.FloatDistribution(float(p.low), float(p.high), log=p.log, step=step)


def _tune_domain(p: Param) -> Any:
    from ray import tune  # lazily: loading a space must never start or import Ray

    values = finite_values(p)
    if values is not None and not (p.type == "int" and p.log):
        return tune.choice(values)
    if p.type == "int":
        return tune.lograndint(int(p.low), int(p.high) + 1)  # upper bound exclusive
    return (tune.loguniform if p.log else tune.uniform)(p.low, p.high)


def _range(p: Param) -> str:
    if p.type == "categorical":
        text = f"categorical {p.choices}"
    else:
        text = f"{p.type} [{p.low:g}, {p.high:g}]" + (" log" if p.log else "") + (
            f" step {p.step:g}" if p.step else "")
    conditions = " and ".join(f"{k} in {v}" if isinstance(v, list) else f"{k}={v}" for k, v in p.when.items())
    return text + (f"  when {conditions}" if conditions else "")


def param_from_text(text: str, dist: optuna.distributions.BaseDistribution) -> Any:
    """A param's value from its text in MLflow (params are strings there), as its distribution holds it."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return next(c for c in dist.choices if str(c) == text)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return int(float(text))
    return float(text)
