"""How a trial is named everywhere: its label (`t007`) and its MLflow run name, which says what
differs from its neighbours."""

from __future__ import annotations

import math
import numbers
from typing import Any

WIDTH = 60  # the longest run name
SHORT_NAMES = {"batch_size": "bs"}


def trial_label(number: int) -> str:
    """`t007`: how a trial is named everywhere (Tune, MLflow run names, the console)."""
    return f"t{number:03d}"


def run_name(label: str, config: dict[str, Any], params: list[str]) -> str:
    """An MLflow run name saying what differs: `t007 lsgan lr=2.1e-4 beta1=0.42 bs=64` for the trial
    labelled t007 (its searched params, in the space's order), at most WIDTH characters (whole parts
    dropped from the end, then `…`)."""
    parts = [label] + [name_part(SHORT_NAMES.get(name, name), config[name])
                       for name in params if name in config]
    name = " ".join(parts)
    if len(name) <= WIDTH:
        return name
    kept = parts[:1]
    for part in parts[1:]:
        if len(" ".join([*kept, part, "…"])) > WIDTH:
            break
        kept.append(part)
    return " ".join([*kept, "…"]) if len(kept) > 1 else name[:WIDTH - 1] + "…"


def name_part(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return key if value else f"no-{key}"
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return f"{key}={value}"
    if isinstance(value, numbers.Real):
        return f"{key}={two_digits(float(value))}"
    return f"{key}={value}"


def two_digits(x: float) -> str:
    """x to 2 significant digits, short: 0.42, 12, 0.0015, 2.1e-4, 1e-5, 3.5e4."""
    x = float(f"{x:.2g}")
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:f}".rstrip("0").rstrip(".")
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"
