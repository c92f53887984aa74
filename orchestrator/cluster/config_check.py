"""`python -m orchestrator check-cluster [cluster.yaml]`: check a Ray cluster launcher config.

Runs what `ray up` runs on the file before it calls the cloud (Ray's `prepare_config` then
`validate_config`, no AWS call), then gansweep's own rules that Ray does not check: the head takes
no trial, every worker type has a GPU, workers scale to zero, spot types fall back to on demand.
Ray is imported inside the functions: the CLI imports this module before it knows the command.
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import library_internals
from orchestrator.cluster.spot_first import SCORER_PATH, SPOT_SUFFIX

SCORER_ENV = f"RAY_AUTOSCALER_UTILIZATION_SCORER={SCORER_PATH}"
V1_ENV = "RAY_enable_autoscaler_v2=0"
TOKEN_ENV = "RAY_AUTH_MODE=token"
TOKEN_PATH = "~/.ray/auth_token"
PUBLISH = "python -m orchestrator.cluster.node_types publish"  # node types for the sweep's resource check


class ClusterConfigError(Exception):
    """The file cannot be read as a cluster config at all (missing, not YAML, not a mapping)."""


@dataclass
class ClusterCheck:
    """What `check` found: the node types, and the problems (errors) and risks (warnings)."""

    path: str
    head: str | None = None
    workers: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def load(path: str | os.PathLike) -> dict[str, Any]:
    """The YAML of `path` as a dict; ClusterConfigError naming the file otherwise."""
    import yaml

    file = Path(path)
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise ClusterConfigError(f"{path}: no such file. Give the cluster config's path, e.g. "
                                 "`python -m orchestrator check-cluster cluster.yaml`.") from None
    except OSError as error:
        raise ClusterConfigError(f"{path}: cannot read it: {error.strerror}.") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ClusterConfigError(f"{path}: not valid YAML{line}: {problem}. Fix the syntax there.") from None
    if not isinstance(config, dict):
        raise ClusterConfigError(f"{path}: expected a mapping of Ray cluster launcher fields "
                                 f"(cluster_name, provider, available_node_types, ...), got "
                                 f"{type(config).__name__}.")
    return config


def _field(path_parts: Any) -> str:
    parts = [str(part) for part in path_parts]
    return ".".join(parts) if parts else "the top level"


def ray_validate(config: dict[str, Any], path: str) -> dict[str, Any]:
    """Ray's `prepare_config` (defaults merged in, setup commands merged) and `validate_config`
    (the launcher's JSON schema, head type, min/max workers): the prepared config, or
    ClusterConfigError with Ray's complaint and the field it is about."""
    import jsonschema

    provider = config.get("provider")
    if not isinstance(provider, dict) or "type" not in provider:
        raise ClusterConfigError(
            f"{path}: provider.type is missing: add `provider: {{type: aws, region: ...}}`.")
    try:
        prepared = library_internals.launcher_validated(copy.deepcopy(config))
    except jsonschema.ValidationError as error:
        raise ClusterConfigError(f"{path}: Ray's cluster launcher rejects {_field(error.absolute_path)}: "
                                 f"{error.message}. See Ray's cluster config reference "
                                 "(ray/autoscaler/ray-schema.json lists every field).") from None
    except (ValueError, KeyError, TypeError, RuntimeError, AssertionError, NotImplementedError) as error:
        raise ClusterConfigError(f"{path}: Ray's cluster launcher rejects it: "
                                 f"{type(error).__name__}: {error}.") from None
    return prepared


def _is_spot(node_type: dict[str, Any]) -> bool:
    market = (node_type.get("node_config") or {}).get("InstanceMarketOptions") or {}
    return str(market.get("MarketType", "")).lower() == "spot"


def _gansweep_rules(config: dict[str, Any], result: ClusterCheck) -> None:
    path = result.path
    types: dict[str, Any] = config["available_node_types"]
    head = config["head_node_type"]
    result.head = head
    result.workers = [name for name in types if name != head]

    head_resources = types[head].get("resources") or {}
    taking = {key: head_resources.get(key) for key in ("CPU", "GPU") if head_resources.get(key) != 0}
    if taking:
        shown = ", ".join(f"{key}: {'missing' if value is None else value}" for key, value in taking.items())
        result.errors.append(
            f"{path}: available_node_types.{head}.resources: the head node type '{head}' would accept "
            f"trials ({shown}; a missing value is filled in from the instance type). Set "
            "`resources: {CPU: 0, GPU: 0}`: the head runs the driver and the tracking server only.")

    if not result.workers:
        result.errors.append(f"{path}: available_node_types has no worker node type: add a GPU worker type "
                             "(e.g. gpu_1x_spot with resources {CPU: 4, GPU: 1}).")
    spot, on_demand = [], []
    for name in result.workers:
        node_type = types[name]
        gpus = (node_type.get("resources") or {}).get("GPU", 0)
        if not gpus or gpus < 1:
            result.errors.append(
                f"{path}: available_node_types.{name}.resources: worker type '{name}' declares no GPU "
                f"(GPU: {gpus or 'missing'}); trials need GPUs and Ray plans with the declared "
                "resources. Declare them, e.g. `resources: {CPU: 4, GPU: 1}` for a g5.xlarge.")
        if node_type.get("min_workers", 0) > 0:
            result.warnings.append(
                f"{path}: available_node_types.{name}.min_workers is {node_type['min_workers']}: that many "
                "GPU nodes run (and are billed) even with no sweep. Set it to 0 unless you want a warm pool.")
        is_spot = _is_spot(node_type)
        (spot if is_spot else on_demand).append(name)
        if is_spot != name.endswith(SPOT_SUFFIX):
            result.errors.append(
                f"{path}: available_node_types.{name}: "
                + (f"InstanceMarketOptions asks for spot but the name does not end in '{SPOT_SUFFIX}'"
                   if is_spot else f"the name ends in '{SPOT_SUFFIX}' but node_config has no "
                   "InstanceMarketOptions: {MarketType: spot}")
                + ". orchestrator/cluster/spot_first.py ranks spot types by that suffix: rename the type or "
                "fix node_config.")
    if spot and not on_demand:
        result.warnings.append(
            f"{path}: every worker type is spot ({', '.join(spot)}): while AWS has no spot capacity the "
            "sweep waits. Add an on-demand type with the same resources (e.g. gpu_1x_ondemand).")
    head_start = " ".join(config.get("head_start_ray_commands") or [])
    if spot and on_demand and not (SCORER_ENV in head_start and V1_ENV in head_start):
        result.warnings.append(
            f"{path}: head_start_ray_commands does not export {V1_ENV} and {SCORER_ENV}: Ray's "
            "default autoscaling keeps retrying a spot type whose launches fail and never uses the "
            "on-demand one (see cluster.yaml's comments).")

    if PUBLISH not in head_start:
        result.warnings.append(
            f"{path}: head_start_ray_commands does not run `{PUBLISH} ~/ray_bootstrap_config.yaml` after "
            "`ray start --head`: a sweep cannot see the worker types while none is running, and refuses "
            "GPU trials on a cluster scaled to zero.")
    worker_start = " ".join(config.get("worker_start_ray_commands") or [])
    starts = {"head_start_ray_commands": head_start, "worker_start_ray_commands": worker_start}
    for key, commands in starts.items():
        if TOKEN_ENV not in commands:
            result.warnings.append(
                f"{path}: {key} does not export {TOKEN_ENV}: that Ray accepts connections without "
                "the cluster's token.")
    mounts = config.get("file_mounts") or {}
    if not any(os.path.expanduser(remote) == os.path.expanduser(TOKEN_PATH) for remote in mounts):
        result.warnings.append(f"{path}: file_mounts does not copy {TOKEN_PATH} to the nodes: with "
                               f"{TOKEN_ENV} they cannot join. Add `{TOKEN_PATH}: {TOKEN_PATH}`.")
    for remote, local in mounts.items():
        if not os.path.exists(os.path.expanduser(str(local))):
            hint = ("run `ray get-auth-token --generate` once" if str(local).endswith("auth_token")
                    else "relative paths are taken from the current folder: run from the repository's top")
            result.errors.append(f"{path}: file_mounts.{remote}: '{local}' does not exist on this machine "
                                 f"(`ray up` would stop there): {hint}.")


def check(path: str | os.PathLike) -> ClusterCheck:
    """All of the above for one file: Ray's own validation first, gansweep's rules if it passes."""
    result = ClusterCheck(path=str(path))
    try:
        prepared = ray_validate(load(path), str(path))
    except ClusterConfigError as error:
        result.errors.append(str(error))
        return result
    _gansweep_rules(prepared, result)
    return result


def check_command(path: str | os.PathLike = "cluster.yaml") -> int:
    """Print the verdict on `path`: "PATH: ok (head: ..., workers: ...)" and any warnings, exit
    status 0; or every problem found, exit status 2."""
    result = check(path)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not result.ok:
        for error in result.errors:
            print(error, file=sys.stderr)
        return 2
    print(f"{result.path}: ok (head: {result.head}, workers: {', '.join(result.workers)})")
    return 0
