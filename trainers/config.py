"""Trainer configs: defaults merged with overrides, validated before anything is built.

Every error is a `ConfigError` that names the key, the bad value and what is allowed, so
the CLI and the sweep can show it as is and exit non-zero without a traceback. Its `key` says
which config key is at fault, so a sweep can blame that key without parsing the message.
"""

from __future__ import annotations

import difflib
import numbers
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config value that cannot work; the message says what to do, `key` which key is at fault.

    `key` is None only when no single config key is (an unreadable config file, an unknown trainer).
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key

    def __reduce__(self):  # pickled across processes (Ray) with its key, not only its message
        return type(self), (str(self), self.key)


def cache_root() -> Path:
    """Where datasets and evaluator networks are kept between runs (GANSWEEP_CACHE overrides)."""
    return Path(os.environ.get("GANSWEEP_CACHE", Path.home() / ".cache" / "gansweep"))


def merge(defaults: Mapping[str, Any], overrides: Mapping[str, Any], trainer: str) -> dict[str, Any]:
    """Defaults updated by overrides; an override the trainer does not know is an error."""
    unknown = [key for key in overrides if key not in defaults]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, defaults, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown config key '{key}' for trainer '{trainer}'.{hint} "
            f"Known keys: {', '.join(sorted(defaults))}", key=key
        )
    return {**defaults, **overrides}


def check_choice(config: Mapping[str, Any], key: str, allowed: Iterable[Any]) -> None:
    allowed = list(allowed)
    if config[key] not in allowed:
        raise ConfigError(f"{key}={config[key]!r} is not one of: {', '.join(map(str, allowed))}", key=key)


def check_positive(config: Mapping[str, Any], *keys: str) -> None:
    """Numbers > 0; None passes (it means "derived from another key" wherever a default is None)."""
    for key in keys:
        value = config[key]
        if value is None:
            continue
        if not _is_number(value) or not value > 0:
            raise ConfigError(f"{key}={value!r} must be a number greater than 0", key=key)


def check_range(config: Mapping[str, Any], key: str, low: float, high: float) -> None:
    value = config[key]
    if not _is_number(value) or not low <= value <= high:
        raise ConfigError(f"{key}={value!r} must be a number in [{low}, {high}]", key=key)


def check_whole(config: Mapping[str, Any], *keys: str) -> None:
    """Whole numbers, 0 or more (seeds, counts); None passes."""
    for key in keys:
        value = config[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                                  or value < 0):
            raise ConfigError(f"{key}={value!r} must be a whole number, 0 or more", key=key)


def check_flag(config: Mapping[str, Any], *keys: str) -> None:
    """true/false only: the string 'false' would otherwise switch a feature on."""
    for key in keys:
        if not isinstance(config[key], bool):
            raise ConfigError(f"{key}={config[key]!r} must be true or false", key=key)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def parse_value(text: str) -> Any:
    """`--set key=value` values: YAML scalars (2e-4, true, null, [64, 128]) with a string fallback."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    # PyYAML reads 2e-4 (no dot) as a string; users mean a float.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value
