"""Trainer configs: defaults merged with overrides, validated before anything is built.

Every error is a `ConfigError` that names the key, the bad value and what is allowed, so
the CLI and the sweep can show it as is and exit non-zero without a traceback.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config value that cannot work; the message says which key and what to do."""


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
            f"Known keys: {', '.join(sorted(defaults))}"
        )
    return {**defaults, **overrides}


def check_choice(config: Mapping[str, Any], key: str, allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    if config[key] not in allowed:
        raise ConfigError(f"{key}={config[key]!r} is not one of: {', '.join(map(str, allowed))}")


def check_positive(config: Mapping[str, Any], *keys: str) -> None:
    for key in keys:
        value = config[key]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{key}={value!r} must be a number greater than 0")


def check_range(config: Mapping[str, Any], key: str, low: float, high: float) -> None:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"{key}={value!r} must be a number in [{low}, {high}]")


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
