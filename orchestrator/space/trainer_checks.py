"""The checks of a space that ask its trainer (`TrainerSpec`): its own validation (`resolve`) of the
fixed values, of every choice and both bounds of every param, of each start_from entry; its model
inputs; its metrics and default collapse rule for `stop_when`. Each failure is a `SpaceError` naming
the field (through `fail`)."""

from __future__ import annotations

import math
from typing import Any

from orchestrator.space import collapse, source_forms
from orchestrator.space.schema import Param, SpaceFile
from orchestrator.space.values import fit_value, hint, listify, shown
from trainers.catalog import TrainerSpec
from trainers.config import ConfigError


def start_from_problem(entries: int, num_samples: int, setting: str) -> str | None:
    """Why a start_from list cannot all run in num_samples trials, or None; `setting` is where the
    trial count was set (the file's num_samples, or --num-samples)."""
    if entries <= num_samples:
        return None
    runs = "the sweep runs" if setting == "num_samples" else f"{setting} runs"
    return (f"{entries} configs, but {runs} {num_samples} trials, so the last ones would never run. "
            f"Raise {setting}, or list fewer")


def fixed(fail: Any, spec: TrainerSpec, fixed: dict[str, Any]) -> None:
    """The trainer's own validation (spec.resolve) of the fixed values."""
    try:
        spec.resolve(dict(fixed))
    except ConfigError as exc:
        raise fail(f"fixed.{exc.key}" if exc.key else "fixed", f"trainer '{spec.name}' rejects it: {exc}. "
                   "Fix the value") from None


def model_inputs(fail: Any, spec: TrainerSpec, fixed: dict[str, Any],
                        params: dict[str, Param]) -> None:
    """The models a trainer starts from are fixed (one source per sweep), in a form the driver can
    look up (orchestrator/sweep/model_sources.py); whether they exist is checked when the sweep starts."""
    for key in spec.model_inputs:
        if key in params:
            raise fail(f"params.{key}", f"'{key}' names a trained model and cannot be searched over. Move it "
                       "to fixed (or --set), one sweep per model")
        if key in fixed and (problem := source_forms.form_problem(fixed[key])):
            raise fail(f"fixed.{key}", problem)


def probes(fail: Any, spec: TrainerSpec, fixed: dict[str, Any], params: dict[str, Param],
                  conditional: bool) -> None:
    """spec.resolve on fixed + each choice / both bounds of each param (the conditional ones, or the
    others), one value at a time; a conditional param with the values its `when` needs."""
    for name, p in params.items():
        if bool(p.when) != conditional:
            continue
        if p.type == "categorical":
            probes = [("choices", value, f"{value!r}", "Remove it from choices") for value in p.choices or ()]
        else:
            cast = int if p.type == "int" else float
            probes = [(key, cast(getattr(p, key)), f"{key} {getattr(p, key):g}", "Narrow the range")
                      for key in ("low", "high")]
        for key, value, written, fix in probes:
            try:
                spec.resolve({**fixed, **_context(name, params), name: value})
            except ConfigError as exc:
                raise fail(f"params.{name}.{key}",
                           f"trainer '{spec.name}' rejects {written}: {exc}. {fix}") from None


def _context(name: str, params: dict[str, Param]) -> dict[str, Any]:
    """Values that make `name`'s conditions hold, its conditions' conditions included (no cycles here)."""
    context: dict[str, Any] = {}
    for other, cond in params[name].when.items():
        context.update({**_context(other, params), other: listify(cond)[0]})
    return context


def start_from(fail: Any, spec: TrainerSpec, f: SpaceFile, params: dict[str, Param],
                      num_samples: int) -> list[dict[str, Any]]:
    """Each entry's values as its params hold them (`fit_value`); the params it leaves out are sampled.
    A conditional param needs its condition set in the same entry (Optuna would drop it otherwise), a
    grid's entry is a whole point of the grid (a grid samples nothing), and the trainer accepts each."""
    if problem := start_from_problem(len(f.start_from), num_samples, "num_samples"):
        raise fail("start_from", problem)
    entries = []
    for i, entry in enumerate(f.start_from):
        at = f"start_from.{i}"
        if not entry:
            raise fail(at, "names no param. Give some params' values (the others are sampled), or remove it")
        for key in entry:
            if key in f.fixed:
                raise fail(f"{at}.{key}", f"'{key}' is fixed ({shown(f.fixed[key])}) in this "
                           "space, so every trial already uses it. Remove it here, or move it to params")
            if key not in params:
                raise fail(f"{at}.{key}", f"'{key}' is not a param of this space. {hint(key, params)}")
        values: dict[str, Any] = {}
        for name, p in params.items():  # dependency order: a condition's param comes before its own
            if name in entry:
                try:
                    values[name] = fit_value(p, entry[name])
                except ValueError as err:
                    raise fail(f"{at}.{name}", f"{err}. Use a value of params.{name}") from None
                if problem := _unmet(name, p, values):
                    raise fail(f"{at}.{name}", problem)
        missing = [name for name in params if name not in values]
        if f.sampler.type == "grid" and missing:
            raise fail(at, f"a grid runs whole points of its grid, so an entry names every param (missing: "
                       f"{', '.join(missing)})")
        try:
            spec.resolve({**f.fixed, **values})
        except ConfigError as exc:
            raise fail(f"{at}.{exc.key}" if exc.key in values else at,
                       f"trainer '{spec.name}' rejects it: {exc}. Change the entry") from None
        entries.append(values)
    return entries


def _unmet(name: str, p: Param, values: dict[str, Any]) -> str | None:
    """Why a start_from entry's value of `name` would never be used: a `when` it does not satisfy."""
    for other, cond in p.when.items():
        wanted = " or ".join(repr(v) for v in listify(cond))
        if other not in values:
            return (f"'{name}' is searched only when {other} is {wanted}, and this entry leaves {other} to "
                    f"the sampler. Add {other} to the entry, or remove {name}")
        if values[other] not in listify(cond):
            return (f"'{name}' is searched only when {other} is {wanted}, and this entry sets "
                    f"{other}={values[other]!r}. Remove {name}, or change {other}")
    return None


def stop_when(fail: Any, spec: TrainerSpec, setting: Any, last_epoch: int) -> collapse.StopRule | None:
    """The space's `stop_when` as the rule that stops collapsed trials (orchestrator/space/collapse.py):
    the trainer's default rule (`TrainerSpec.stop_when`) with the space's keys over them, a key set to
    null dropping a default; `false` turns the rule off."""
    if setting is False:
        return None
    if setting is not None and (not isinstance(setting, dict) or not setting):
        raise fail("stop_when", f"got {setting!r}. Give thresholds, such as {{sample_diversity: {{below: "
                   "1.0e-4}, from_epoch: 2}, or false to turn the rule off")
    merged = {**spec.stop_when, **(setting or {})}
    from_epoch = merged.pop(collapse.FROM_EPOCH, collapse.DEFAULT_FROM_EPOCH)
    if isinstance(from_epoch, bool) or not isinstance(from_epoch, int) or from_epoch < 1:
        raise fail("stop_when.from_epoch", f"got {from_epoch!r}. Give the first epoch to judge, a whole "
                   "number >= 1")
    thresholds = []
    for metric, bound in merged.items():
        field = f"stop_when.{metric}"
        if metric not in spec.metrics:
            raise fail(field, f"trainer '{spec.name}' never reports '{metric}'. "
                       f"{hint(metric, [collapse.FROM_EPOCH, *spec.metrics])}")
        if bound is None:  # drops a default threshold
            continue
        one = isinstance(bound, dict) and len(bound) == 1
        direction, value = next(iter(bound.items())) if one else (None, None)
        if direction not in collapse.DIRECTIONS or isinstance(value, bool) or not isinstance(
                value, (int, float)) or not math.isfinite(value):
            raise fail(field, f"got {bound!r}. Write {{below: NUMBER}} or {{above: NUMBER}}, or null to "
                       "drop this threshold")
        thresholds.append(collapse.Threshold(metric, direction, float(value)))
    if not thresholds or (from_epoch > last_epoch and collapse.FROM_EPOCH not in (setting or {})):
        return None  # nothing to judge (a default rule and a sweep too short for it)
    if from_epoch > last_epoch:
        raise fail("stop_when.from_epoch", f"{from_epoch} is after the last epoch ({last_epoch}), so no "
                   "trial would ever be judged. Lower it, or write stop_when: false")
    return collapse.StopRule(from_epoch, tuple(thresholds))
