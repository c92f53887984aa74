"""What a space's `mode` means, said once: min or max as Optuna's direction, in words, as an order."""

from __future__ import annotations

import math

MODES = ("min", "max")


def ascending(mode: str) -> bool:
    """Whether best first is ascending order."""
    return mode == "min"


def direction(mode: str) -> str:
    """Optuna's name for it: minimize or maximize."""
    return "minimize" if ascending(mode) else "maximize"


def better(mode: str) -> str:
    """`lower` or `higher`, as in '{metric}, lower is better'."""
    return "lower" if ascending(mode) else "higher"


def is_better(value: float, than: float, mode: str) -> bool:
    return value < than if ascending(mode) else value > than


def sort_key(value: float, mode: str) -> float:
    """Sorting by this puts the best value first."""
    return value if ascending(mode) else -value


def worst(mode: str) -> float:
    """The value every other value beats (what a trial that trained nothing reports)."""
    return math.inf if ascending(mode) else -math.inf

