"""Small rules about the values a space holds, shared by the checks, the sampler and the record:
how a value is written back, how a param holds a value, which values a param can take."""

from __future__ import annotations

import difflib
import math
import numbers
from typing import Any

import yaml

from orchestrator.space.schema import Param


def hint(word: str, known: Any) -> str:
    known = list(known)
    close = difflib.get_close_matches(str(word), known, n=3)
    return f"Did you mean {' or '.join(close)}?" if close else f"Use one of: {', '.join(known)}"


def listify(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def clean(x: float) -> float:
    """x with float noise removed (0.30000000000000004 -> 0.3)."""
    return float(f"{x:.12g}")


def fit_value(p: Param, value: Any) -> Any:
    """`value` as param `p` holds it (the matching choice, an int as int, a step's exact value), or
    ValueError saying why the param can never take it."""
    if p.type == "categorical":
        for choice in p.choices or ():
            same = choice == value or (isinstance(choice, list) and choice_label(choice) == value)
            if same and isinstance(choice, bool) == isinstance(value, bool):
                return choice
        raise ValueError(f"{value!r} is not one of the choices {p.choices}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a number")
    if p.type == "int" and not float(value).is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    if not p.low <= value <= p.high:
        raise ValueError(f"{value:g} is outside [{p.low:g}, {p.high:g}]")
    if p.step is not None:
        k = (value - p.low) / p.step
        if abs(k - round(k)) > 1e-9 * max(1.0, abs(k)):
            raise ValueError(f"{value:g} is not low + k*step ({p.low:g} + k*{p.step:g})")
        value = clean(p.low + round(k) * p.step)
    return int(value) if p.type == "int" else float(value)


def finite_values(p: Param) -> list[Any] | None:
    """A param's finite values (categorical, int, float with step), else None."""
    if p.type == "categorical":
        return list(p.choices or [])
    if p.type == "int":
        return list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
    if p.step is None:
        return None
    return [clean(p.low + k * p.step) for k in range(round((p.high - p.low) / p.step) + 1)]


def choice_label(value: Any) -> Any:
    """A choice as Optuna, MLflow params and run names hold it: a list choice by its label
    (`[256, 512, 1024]` -> `256-512-1024`; Optuna takes scalar choices only), any other as it is."""
    return "-".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value


def param_text(value: Any) -> str:
    """A config value as an MLflow param (a string): a list by its label."""
    return str(choice_label(value))


def shown(value: Any) -> str:
    """A value as the user would write it on one line of YAML or --set ({champion: q, part: generator})."""
    if isinstance(value, (dict, list)):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()
    return str(value)
