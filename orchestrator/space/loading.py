"""Reading a space: the YAML file and the `--set` values over it, checked into a `SearchSpace`."""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import SpaceError, UsageError
from orchestrator.space.checks import check_file
from orchestrator.space.schema import SpaceFile
from orchestrator.space.search_space import SearchSpace

TOP_LEVEL = frozenset(SpaceFile.model_fields) - {"fixed", "params"}  # --set names these, or a fixed value


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-4` as a float (YAML 1.1 wants a dot; everyone writes it without)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


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


