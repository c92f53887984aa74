"""Validation of a search-space file: its schema, and every check that runs before anything starts.

`check_file` turns the parsed YAML into the validated fields of a `SearchSpace`, or raises one
`SpaceError` naming the file, the field, what is wrong and how to fix it. Besides its own rules it
asks the trainer (`TrainerSpec.resolve`) about the fixed values, every choice and both bounds.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.errors import SpaceError
from orchestrator.space import trainer_checks
from orchestrator.space.objective import MODES
from orchestrator.space.schema import (
    PARAM_TYPES,
    SAMPLERS,
    SCHEDULER_FIELDS,
    SCHEDULERS,
    Param,
    Resources,
    SamplerSpec,
    SchedulerSpec,
    SpaceFile,
)
from orchestrator.space.values import choice_label, clean, finite_values, hint, listify
from trainers import catalog


def check_file(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Parsed YAML -> SearchSpace's fields (all but path and content_hash); SpaceError if it cannot run."""
    try:
        f = SpaceFile.model_validate(data)
    except ValidationError as exc:
        raise _from_pydantic(path, exc.errors()[0]) from None

    def fail(field: str, message: str) -> SpaceError:
        return SpaceError(path, field, message)

    if f.trainer not in catalog.TRAINERS:
        raise fail("trainer", f"unknown trainer '{f.trainer}'. {hint(f.trainer, catalog.TRAINERS)}")
    spec = catalog.get(f.trainer)
    metrics, modes = listify(f.metric), listify(f.mode)
    if len(modes) != len(metrics):
        raise fail("mode", f"{len(metrics)} metric(s) but {len(modes)} mode(s). Give one mode per metric")
    for i, (metric, mode) in enumerate(zip(metrics, modes, strict=True)):
        at = "" if isinstance(f.metric, str) else f".{i}"
        if metric not in spec.metrics:
            raise fail("metric" + at, f"trainer '{f.trainer}' never reports '{metric}'. "
                       f"{hint(metric, spec.metrics)}")
        if mode not in MODES:
            raise fail("mode" + at, f"mode '{mode}' is not min or max. Use min or max")
    s = f.sampler
    if s.type not in SAMPLERS:
        raise fail("sampler.type", f"unknown sampler '{s.type}'. {hint(s.type, SAMPLERS)}")
    if s.type == "nsga2" and len(metrics) < 2:
        raise fail("metric", "nsga2 searches a Pareto front of 2+ metrics. List two metrics and modes, "
                   "or use sampler tpe")
    if s.type != "nsga2" and len(metrics) != 1:
        raise fail("metric", f"sampler {s.type} optimises one metric. Keep one, or use sampler nsga2")
    if s.type == "cmaes" and importlib.util.find_spec("cmaes") is None:
        raise fail("sampler.type", "cmaes needs the 'cmaes' package. pip install cmaes, or use tpe")
    if f.resources.gpu > 1 and not float(f.resources.gpu).is_integer():
        raise fail("resources.gpu", f"fractional gpu above 1 ({f.resources.gpu:g}) cannot be scheduled. "
                   "Use a fraction in (0, 1] to share a card, or whole cards (2, 4, ...)")
    for where, keys in (("fixed", f.fixed), ("params", f.params)):
        for key in keys:
            if key not in spec.defaults:
                raise fail(f"{where}.{key}", f"'{key}' is not a config key of trainer '{f.trainer}'. "
                           f"{hint(key, spec.defaults)}")
    trainer_checks.model_inputs(fail, spec, f.fixed, f.params)
    _check_devices(fail, f)
    trainer_checks.fixed(fail, spec, f.fixed)
    for name, p in f.params.items():
        if name in f.fixed:
            raise fail(f"params.{name}", f"'{name}' is also in fixed. Keep it in one place")
        _check_param(fail, f"params.{name}", p)
    # a bad choice is reported before a `when` that names it
    trainer_checks.probes(fail, spec, f.fixed, f.params, conditional=False)
    _check_conditions(fail, f.params)
    params = _dependency_order(fail, f.params)
    trainer_checks.probes(fail, spec, f.fixed, params, conditional=True)
    scheduler = _check_scheduler(fail, f, spec.defaults, multi=len(metrics) > 1)
    stop_when = trainer_checks.stop_when(fail, spec, f.stop_when, scheduler.max_t)
    if s.type == "grid":
        for name, p in params.items():
            if p.when:
                raise fail(f"params.{name}.when", "grid enumerates the full product, so a conditional param "
                           "would repeat configurations. Remove when, or use sampler tpe or random")
            if finite_values(p) is None:
                raise fail(f"params.{name}", "grid needs a finite set of values; a float without step has "
                           "none. Add step, or make it categorical")
    num_samples, note = fit_samples(path, s.type, scheduler.type, params, f.num_samples,
                                    explicit="num_samples" in data)
    start_from = trainer_checks.start_from(fail, spec, f, params, num_samples)
    return dict(name=f.name, trainer=f.trainer, metrics=metrics, modes=modes, num_samples=num_samples,
                max_concurrent=f.max_concurrent, resources=f.resources, sampler=s, scheduler=scheduler,
                max_failures=f.max_failures, reuse_actors=f.reuse_actors, stop_when=stop_when,
                fixed=dict(f.fixed), params=params,
                start_from=start_from, notes=(note,) if note else ())


def fit_samples(path: Path, sampler: str, scheduler: str | None, params: dict[str, Param], num_samples: int,
                explicit: bool) -> tuple[int, str | None]:
    """(num_samples, note): grid runs exactly its grid, so num_samples defaults to the grid size and is
    clamped to it (with a note when the YAML or the CLI asked for more)."""
    if scheduler == "pbt" and num_samples < 2:
        raise SpaceError(path, "num_samples", "pbt needs a population of at least 2. Raise it")
    if sampler != "grid":
        return num_samples, None
    size = math.prod(len(finite_values(p) or ()) for p in params.values())
    if explicit and num_samples <= size:
        return num_samples, None
    note = f"num_samples {num_samples} exceeds the grid ({size} points); running {size}" if explicit else None
    return size, note


def _check_param(fail: Any, where: str, p: Param) -> None:
    if p.type not in PARAM_TYPES:
        raise fail(f"{where}.type", f"unknown param type '{p.type}'. Use one of: {', '.join(PARAM_TYPES)}")
    numeric = [k for k in ("low", "high", "step") if getattr(p, k) is not None] + (["log"] if p.log else [])
    if p.type == "categorical":
        if numeric:
            raise fail(f"{where}.{numeric[0]}", f"a categorical param has no {numeric[0]}. Remove it, "
                       "or use type float/int")
        if not p.choices:
            raise fail(f"{where}.choices", "choices is empty or missing. List at least one value")
        scalar = (str, int, float, bool, type(None))
        bad = [c for c in p.choices if not isinstance(c, scalar) and not (
            isinstance(c, list) and c and all(isinstance(v, scalar) for v in c))]
        if bad:
            raise fail(f"{where}.choices", f"{bad[0]!r} is neither a value (str, int, float, bool, null) nor "
                       "a non-empty list of them (a list choice, such as [256, 512, 1024])")
        if len({repr(c) for c in p.choices}) < len(p.choices) or len(
                {repr(choice_label(c)) for c in p.choices}) < len(p.choices):
            raise fail(f"{where}.choices", "choices repeat a value (a list choice is known by its label, "
                       "such as 256-512-1024). List each value once")
        return
    if p.choices is not None:
        raise fail(f"{where}.choices", f"a {p.type} param has no choices. Remove them, or use categorical")
    for key in ("low", "high"):
        if getattr(p, key) is None:
            raise fail(f"{where}.{key}", f"missing. A {p.type} param needs low and high")
    for key in ("low", "high", "step"):
        value = getattr(p, key)
        if p.type == "int" and value is not None and not float(value).is_integer():
            raise fail(f"{where}.{key}", f"{value} is not a whole number. Use type: float for fractions")
    if p.low >= p.high:
        fix = "Swap them" if p.low > p.high else "Widen the range, or move the value to fixed"
        raise fail(f"{where}.low", f"low ({p.low:g}) must be < high ({p.high:g}). {fix}")
    if p.log and p.low <= 0:
        raise fail(f"{where}.low", f"log scale needs low > 0 (got {p.low:g}). Raise low, or set log: false")
    if p.step is not None:
        if p.step <= 0:
            raise fail(f"{where}.step", f"step ({p.step:g}) must be > 0. Use a positive step")
        if p.log and (p.type == "float" or p.step != 1):
            raise fail(f"{where}.step", "Optuna cannot combine log with a step. Remove one of them")
        n = (p.high - p.low) / p.step
        if abs(n - round(n)) > 1e-9 * max(1.0, n):
            raise fail(f"{where}.high", f"high ({p.high:g}) is not low + k*step. Set high to "
                       f"{clean(p.low + math.floor(n) * p.step):g}")


def _check_devices(fail: Any, f: SpaceFile) -> None:
    """A trial's device is the one Ray gives it (runtime.placed_device): a GPU only with resources.gpu,
    and then its own card, which Ray shows it as cuda:0."""
    where = [("fixed.device", f.fixed["device"])] if "device" in f.fixed else []
    if "device" in f.params:
        where += [("params.device.choices", value) for value in f.params["device"].choices or ()]
    gpu = f.resources.gpu
    for field, value in where:
        if not isinstance(value, str):
            continue
        if re.fullmatch(r"cuda:\d+", value):
            raise fail(field, f"device {value!r}: Ray gives each trial its own GPU, which the trial sees as "
                       "cuda:0, so a sweep cannot pick a card by number. Use device: cuda or auto, and "
                       "resources.gpu for how many")
        if value == "cuda" and not gpu:
            raise fail(field, "device 'cuda' but resources.gpu is 0: the trial would hold no GPU. Set "
                       "resources.gpu (0.25 shares a card four ways), or device: auto")
        if value == "cpu" and gpu:
            raise fail(field, f"device 'cpu' but resources.gpu is {gpu:g}: the trial would hold a GPU it "
                       "never uses. Set resources.gpu: 0, or device: auto")


def _check_conditions(fail: Any, params: dict[str, Param]) -> None:
    for name, p in params.items():
        for other, cond in p.when.items():
            field = f"params.{name}.when.{other}"
            if other == name:
                raise fail(field, "a param cannot depend on itself. Remove this condition")
            if other not in params:
                raise fail(field, f"'{other}' is not a param of this space. {hint(other, params)}")
            wanted = listify(cond)
            if not wanted:
                raise fail(field, "the value list is empty, so the condition never holds. List values")
            choices = params[other].choices or []
            never = [v for v in wanted if params[other].type == "categorical" and v not in choices]
            if never:
                raise fail(field, f"{never[0]!r} is not one of {other}'s choices {choices}, so the "
                           "condition never holds. Use one of them")


def _dependency_order(fail: Any, params: dict[str, Param]) -> dict[str, Param]:
    """Params reordered so every `when` refers to earlier ones (YAML order otherwise kept)."""
    ordered: dict[str, Param] = {}
    pending = list(params)
    while pending:
        ready = [n for n in pending if all(other in ordered for other in params[n].when)]
        if not ready:
            raise fail(f"params.{pending[0]}.when", f"conditions form a cycle among {', '.join(pending)}. "
                       "Remove one of them")
        for name in list(pending):
            if all(other in ordered for other in params[name].when):
                ordered[name] = params[name]
                pending.remove(name)
    return ordered


def _check_scheduler(fail: Any, f: SpaceFile, defaults: Any, multi: bool) -> SchedulerSpec:
    sched = f.scheduler.model_copy()
    sched.type = sched.type or ("fifo" if multi else "asha")
    if sched.type not in SCHEDULERS:
        raise fail("scheduler.type", f"unknown scheduler '{sched.type}'. {hint(sched.type, SCHEDULERS)}")
    if multi and sched.type != "fifo":
        raise fail("scheduler.type", f"{sched.type} stops trials on one metric, but this space has "
                   f"{len(listify(f.metric))}. Use scheduler fifo with nsga2")
    for key in ("grace_period", "reduction_factor", "perturbation_interval"):
        if getattr(sched, key) is not None and key not in SCHEDULER_FIELDS[sched.type]:
            raise fail(f"scheduler.{key}", f"{sched.type} does not use {key}. Remove it")
    top = f.params.get("epochs")
    top = None if top is None else max(top.choices) if top.type == "categorical" else top.high
    epochs = f.fixed.get("epochs") or top or defaults.get("epochs") or 100
    sched.max_t = sched.max_t or (int(epochs) if isinstance(epochs, (int, float)) else 100)
    if sched.type in ("asha", "median"):
        sched.grace_period = sched.grace_period or 1
        if sched.grace_period > sched.max_t:
            raise fail("scheduler.grace_period", f"grace_period ({sched.grace_period}) must be <= max_t "
                       f"({sched.max_t}). Lower it")
    if sched.type == "asha":
        sched.reduction_factor = sched.reduction_factor or 3
    if sched.type == "pbt":
        sched.perturbation_interval = sched.perturbation_interval or max(1, sched.max_t // 4)
        if "sampler" in f.model_fields_set and f.sampler.type != "random":
            raise fail("sampler.type", "pbt samples its own population and cannot use an Optuna sampler. "
                       "Remove sampler, or use type random")
        if not f.params:
            raise fail("params", "pbt needs at least one param to mutate. Add one, or use asha")
        conditional = [name for name, p in f.params.items() if p.when]
        if conditional:
            raise fail(f"params.{conditional[0]}.when", "pbt cannot mutate conditional params. Remove "
                       "when, or use scheduler asha")
    return sched


def _from_pydantic(path: Path, err: Any) -> SpaceError:
    # Union members show up in loc as type tags ('str', 'list[str]', 'int', 'float'): skip them.
    tags = ("str", "int", "float")
    loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and (p in tags or "[" in p))]
    field = ".".join(loc) or "(top)"
    if err["type"] == "extra_forbidden":
        model = {"resources": Resources, "sampler": SamplerSpec, "scheduler": SchedulerSpec,
                 "params": Param}.get(loc[0], SpaceFile) if len(loc) > 1 else SpaceFile
        return SpaceError(path, field, f"unknown field '{loc[-1]}'. {hint(loc[-1], model.model_fields)}")
    if err["type"] == "missing":
        return SpaceError(path, field, "missing. Add it (see search_spaces/quickstart.yaml)")
    return SpaceError(path, field, f"got {err.get('input')!r}: {err['msg']}")


