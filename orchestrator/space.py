"""Search-space YAML -> validated `SearchSpace` -> Optuna define-by-run and sampler (Tune domains for PBT).

`load_space` checks everything (orchestrator/space_checks.py) before Ray is imported (this module never
imports it at top level), so a bad space fails fast with one `SpaceError` naming the file, the field and
the fix, and starts nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import numbers
import re
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml

from orchestrator.collapse import StopRule
from orchestrator.errors import UsageError
from orchestrator.model_sources import shown
from orchestrator.space_checks import (
    Param,
    Resources,
    SamplerSpec,
    SchedulerSpec,
    SpaceError,
    SpaceFile,
    check_file,
    finite_values,
    fit_samples,
    listify,
)

__all__ = ["Param", "Resources", "SamplerSpec", "SchedulerSpec", "SearchSpace", "SpaceError", "load_space"]

TOP_LEVEL = frozenset(SpaceFile.model_fields) - {"fixed", "params"}  # --set names these, or a fixed value
RUN_NAME_WIDTH = 60
SHORT_NAMES = {"batch_size": "bs"}  # in run names


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-4` as a float (YAML 1.1 wants a dot; everyone writes it without)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def trial_label(number: int) -> str:
    """`t007`: how a trial is named everywhere (Tune, MLflow run names, the console)."""
    return f"t{number:03d}"


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
    stop_when: StopRule | None  # stops collapsed trials (orchestrator/collapse.py); None: no rule
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
        """Suggest each param whose `when` holds; return the fixed values, which Ray Tune's
        `OptunaSearch(space=fn)` adds to the trial config as constants."""
        chosen: dict[str, Any] = {}
        for name, p in self.params.items():
            if _holds(p.when, chosen):
                chosen[name] = _suggest(trial, name, p)
        return copy.deepcopy(self.fixed)

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
            return _AskTellGridSampler(self.grid(), seed=s.seed, first=self.start_from)
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
        return grid  # type: ignore[return-value]

    def optuna_distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """Each param's Optuna distribution, the one `define_by_run` suggests from: what
        `optuna.trial.create_trial` needs to rebuild a study from finished trials."""
        return {name: _distribution(p) for name, p in self.params.items()}

    def run_name(self, label: str, config: dict[str, Any]) -> str:
        """An MLflow run name saying what differs: `t007 lsgan lr=2.1e-4 beta1=0.42 bs=64` for the
        trial labelled t007, at most RUN_NAME_WIDTH characters (whole parts dropped from the end,
        then `…`)."""
        parts = [label] + [_name_part(SHORT_NAMES.get(name, name), config[name])
                                     for name in self.params if name in config]
        name = " ".join(parts)
        if len(name) <= RUN_NAME_WIDTH:
            return name
        kept = parts[:1]
        for part in parts[1:]:
            if len(" ".join([*kept, part, "…"])) > RUN_NAME_WIDTH:
                break
            kept.append(part)
        return " ".join([*kept, "…"]) if len(kept) > 1 else name[:RUN_NAME_WIDTH - 1] + "…"

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
        if len(self.start_from) > count:
            raise SpaceError(self.path, "start_from", f"{len(self.start_from)} configs, but --num-samples "
                             f"runs {count} trials. Raise --num-samples, or list fewer")
        return dataclasses.replace(self, num_samples=count, notes=self.notes + ((note,) if note else ()),
                                   max_concurrent=max_concurrent or self.max_concurrent)


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler that runs the `first` points (the space's start_from) before the rest of its shuffled
    grid, each once, and does not call study.stop() after the last point: outside study.optimize (Ray's
    OptunaSearch uses ask/tell) that raises RuntimeError (optuna #4121, #5141). num_samples <= the
    grid size already ends the sweep."""

    def __init__(self, grid: dict[str, list[Any]], seed: int, first: list[dict[str, Any]]) -> None:
        super().__init__(grid, seed=seed)
        # Trial number i gets the i-th point of _all_grids (GridSampler.before_trial, optuna 5), so the
        # start_from points go in front. Enqueued trials would not count as grid points: the grid would
        # run them again and skip as many others.
        points = list(dict.fromkeys(tuple(point[name] for name in self._param_names) for point in first))
        self._all_grids = points + [g for g in self._all_grids if g not in points]

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` arguments -> {KEY: VALUE}, each VALUE read as YAML (20, 1e-4, true, {a: b})."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, such as --set epochs=20")
        try:
            overrides[key.strip()] = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as exc:
            raise UsageError(f"--set {item!r}: the value is not valid YAML ({getattr(exc, 'problem', exc)}). "
                             "Quote it for the shell, such as --set 'source={champion: NAME, part: "
                             "discriminator}'") from None
    return overrides


def override_field(key: str) -> str:
    """The field of the space that `--set key=...` sets: a top-level field of the file
    (num_samples, resources.gpu, scheduler.max_t, ...) or else a fixed trainer value."""
    return key if key.partition(".")[0] in TOP_LEVEL else f"fixed.{key}"


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The space's mapping with the overrides applied; a fixed value pins the param of its name."""
    data = copy.deepcopy(data)
    for key, value in overrides.items():
        *parents, last = override_field(key).split(".")
        node = data
        for name in parents:
            if not isinstance(node.get(name), dict):
                node[name] = {}
            node = node[name]
        node[last] = value
        if parents == ["fixed"] and isinstance(data.get("params"), dict):
            data["params"].pop(last, None)
        if parents == ["fixed"] and isinstance(data.get("start_from"), list):  # the pinned value wins
            entries = [{k: v for k, v in e.items() if k != last} if isinstance(e, dict) else e
                       for e in data["start_from"]]
            data["start_from"] = [e for e in entries if e != {}]
    return data


def load_space(path: str | Path, overrides: dict[str, Any] | None = None) -> SearchSpace:
    """Read and fully validate a search-space YAML, with `--set` overrides applied as fixed values;
    raise SpaceError on the first problem (naming `--set KEY` when an override caused it)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpaceError(path, "(file)", f"cannot read it ({exc.strerror}). Check the path") from None
    try:
        data = yaml.load(raw, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpaceError(path, f"line {mark.line + 1}" if mark else "(yaml)",
                         f"not valid YAML ({getattr(exc, 'problem', exc)}). Fix the syntax") from None
    if not isinstance(data, dict):
        raise SpaceError(path, "(top)", "expected a mapping (name, trainer, metric, mode, params, ...). "
                         "See search_spaces/quickstart.yaml")
    overrides = overrides or {}
    data = _apply_overrides(data, overrides)
    try:
        fields = check_file(path, data)
    except SpaceError as err:
        culprit = next((key for key in overrides if f"{err.field}.".startswith(f"{override_field(key)}.")),
                       None)
        if culprit is None:
            raise
        raise SpaceError(path, f"--set {culprit}", err.detail) from None
    return SearchSpace(path=path, content_hash=hashlib.sha256(raw).hexdigest()[:12], overrides=overrides,
                       document=data, **fields)


def _holds(when: dict[str, Any], chosen: dict[str, Any]) -> bool:
    return all(k in chosen and chosen[k] in listify(v) for k, v in when.items())


def _suggest(trial: optuna.Trial, name: str, p: Param) -> Any:
    if p.type == "categorical":
        return trial.suggest_categorical(name, p.choices)  # type: ignore[arg-type]
    if p.type == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    step = None if p.step is None else float(p.step)
    return trial.suggest_float(name, float(p.low), float(p.high), step=step, log=p.log)


def _distribution(p: Param) -> optuna.distributions.BaseDistribution:
    """What `_suggest` draws from (the same arguments, so trial.distributions compare equal)."""
    dist = optuna.distributions
    if p.type == "categorical":
        return dist.CategoricalDistribution(p.choices)  # type: ignore[arg-type]
    if p.type == "int":
        return dist.IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
    step = None if p.step is None else float(p.step)
    return dist.FloatDistribution(float(p.low), float(p.high), log=p.log, step=step)


def _name_part(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return key if value else f"no-{key}"
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return f"{key}={value}"
    if isinstance(value, numbers.Real):
        return f"{key}={_two_digits(float(value))}"
    return f"{key}={value}"


def _two_digits(x: float) -> str:
    """x to 2 significant digits, short: 0.42, 12, 0.0015, 2.1e-4, 1e-5, 3.5e4."""
    x = float(f"{x:.2g}")
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:f}".rstrip("0").rstrip(".")
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


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
