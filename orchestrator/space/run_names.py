"""How a trial is named everywhere: its label (`t007`) and its MLflow run name, which says what
differs from its neighbours."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

WIDTH = 60  # the longest run name
MAX_DIGITS = 6  # significant digits a number is shown with at most
SHORT_NAMES = {"batch_size": "bs"}


def trial_label(number: int) -> str:
    """`t007`: how a trial is named everywhere (Tune, MLflow run names, the console)."""
    return f"t{number:03d}"


def run_name(label: str, config: dict[str, Any], params: list[str],
             others: Iterable[dict[str, Any]] = ()) -> str:
    """An MLflow run name saying what differs: `t007 lsgan lr=2.1e-4 beta1=0.42 bs=64` for the trial
    labelled t007 (its searched params, in the space's order), at most WIDTH characters (whole parts
    dropped from the end, then `…`).

    Numbers get two significant digits, more where two would show another value (0.999 is not `1`)
    or where another trial (`others`: their configs) with other values would read the same."""
    differing = [other for other in others if any(other.get(n) != config.get(n) for n in params)]
    for digits in range(2, MAX_DIGITS + 1):
        described = describe(config, params, digits)
        if all(describe(other, params, digits) != described for other in differing):
            break
    name = " ".join([label, *described])
    if len(name) <= WIDTH:
        return name
    kept = [label]
    for part in described:
        if len(" ".join([*kept, part, "…"])) > WIDTH:
            break
        kept.append(part)
    return " ".join([*kept, "…"]) if len(kept) > 1 else name[:WIDTH - 1] + "…"


def describe(config: dict[str, Any], params: list[str], digits: int = 2) -> list[str]:
    """The parts of a run name: each searched param's value (numbers to `digits` significant digits)."""
    return [name_part(SHORT_NAMES.get(name, name), config[name], digits) for name in params if name in config]


def name_part(key: str, value: Any, digits: int = 2) -> str:
    if isinstance(value, bool):
        return key if value else f"no-{key}"
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return f"{key}={value}"
    if isinstance(value, numbers.Real):
        return f"{key}={number(float(value), digits)}"
    if isinstance(value, (list, tuple)):  # a list-valued choice, as its label: hidden=256-512-1024
        return f"{key}={'-'.join(str(v) for v in value)}"
    return f"{key}={value}"


def number(x: float, digits: int = 2) -> str:
    """x to `digits` significant digits, short: 0.42, 12, 0.0015, 2.1e-4, 1e-5, 3.5e4; more digits
    where rounding would lose one (0.999 -> 0.999, not 1; 0.99995 -> 0.99995)."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    for shown_digits in range(digits, MAX_DIGITS + 1):
        rounded = float(f"{x:.{shown_digits}g}")
        if rounded == x or _significant(rounded, shown_digits) == shown_digits:
            break
    if 1e-3 <= abs(rounded) < 1e4:
        decimals = max(0, shown_digits - 1 - math.floor(math.log10(abs(rounded))))
        text = f"{rounded:.{decimals}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    mantissa, exponent = f"{rounded:.{shown_digits - 1}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
    return f"{mantissa}e{int(exponent)}"


def _significant(rounded: float, digits: int) -> int:
    """How many significant digits `rounded` shows when written with at most `digits` of them."""
    mantissa = f"{rounded:.{digits}g}".split("e")[0].lstrip("-").replace(".", "")
    return len(mantissa.strip("0"))
