"""Before the first trial: the dataset and the evaluator network every trial needs, made ready on
every node that can run a trial (trainers/prepare.py), one Ray task per node and data config, all
at once. A node that joins later (autoscaling) is left to its trials, which make them themselves
under the cache's locks.

Without it the first trials of a sweep on a cold cache each wait on the cache's lock while one of
them trains the evaluator, and their slots idle for a minute. A dataset that cannot be found or
downloaded ends the sweep here, before any trial, with the trainer's own message.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.errors import SpaceError
from orchestrator.space.search_space import SearchSpace
from orchestrator.space.values import finite_values
from trainers import catalog, runtime
from trainers.config import ConfigError
from trainers.prepare import DEFINING_KEYS, data_config, prepare

MAX_CONFIGS = 8  # data configs prepared at most (the choices of sampled data params, multiplied)
UNSET = object()  # a conditional param left out of a trial


def data_configs(space: SearchSpace) -> tuple[list[dict[str, Any]], str | None]:
    """The fixed values of each distinct data config the space's trials can have: one for each
    combination of the choices of sampled data params. None of them, and the reason, when a data
    param is sampled from a range or they would be too many: trials then prepare their own."""
    sampled = {name: p for name, p in space.params.items() if name in DEFINING_KEYS}
    choices: dict[str, list[Any]] = {}
    for name, p in sampled.items():
        values = finite_values(p)
        if values is None:
            return [], f"{name} is sampled from a range"
        choices[name] = [*values, UNSET] if p.when else values  # UNSET: the trainer's default
    count = math.prod(len(values) for values in choices.values())
    if count > MAX_CONFIGS:
        return [], f"the choices of {' and '.join(choices)} make {count} data configs"
    combinations = [dict(zip(choices, chosen, strict=True))
                    for chosen in itertools.product(*choices.values())]
    return [{**space.fixed, **{k: v for k, v in chosen.items() if v is not UNSET}}
            for chosen in combinations], None


def trial_nodes(space: SearchSpace) -> list[str]:
    """The ids of the live nodes with room for one trial (not a head that takes no trials)."""
    need = {"CPU": space.resources.cpu, "GPU": space.resources.gpu}
    return [node["NodeID"] for node in ray.nodes()
            if node["Alive"] and all(node["Resources"].get(k, 0) >= v for k, v in need.items() if v)]


def prepare_nodes(space: SearchSpace) -> None:
    """Prepare the space's data configs on every node that can run a trial; raise SpaceError
    (exit 2, nothing in MLflow yet) when a dataset cannot be loaded."""
    fixed, skipped = data_configs(space)
    nodes = trial_nodes(space)
    if skipped or not nodes:
        why = skipped or "no node can run a trial yet"
        print(f"not preparing data before the trials ({why}): each trial prepares its own", file=sys.stderr)
        return
    spec = catalog.get(space.trainer)
    try:
        # On the device a trial would have: the CPU unless the trial holds a GPU (runtime.placed_device).
        configs = [data_config(space.trainer, {**values, "device": runtime.placed_device(
            values.get("device", spec.defaults["device"]), holds_gpu=bool(space.resources.gpu))})
            for values in fixed]
    except ConfigError as err:
        raise SpaceError(space.path, space.field_of(err.key), str(err)) from None
    datasets = ", ".join(dict.fromkeys(config["dataset"] for config in configs))
    with_evaluator = spec.needs_evaluator
    what = "data and evaluator" if with_evaluator else "data"
    count = f"{len(nodes)} node{'s' if len(nodes) > 1 else ''}"
    print(f"preparing {datasets} {what} on {count} ...", file=sys.stderr, flush=True)
    began = time.perf_counter()
    # One task per node and config, with a trial's resources (and so its torch threads: more
    # threads than free cores make it many times slower on a busy machine). The function is
    # trainers.prepare's own, so a node imports torch and the data code, not this module.
    task = ray.remote(num_cpus=space.resources.cpu, num_gpus=space.resources.gpu, max_retries=0)(prepare)
    tasks = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
             .remote(config, with_evaluator) for node in nodes for config in configs]
    try:
        done = sorted(set(ray.get(tasks)))
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, ConfigError):  # the dataset cannot be loaded: no trial could run
            raise SpaceError(space.path, space.field_of(err.cause.key), str(err.cause)) from None
        print(f"preparing failed ({err.cause!r}): each trial prepares its own", file=sys.stderr)
        return
    except ray.exceptions.RayError as err:  # a node lost: the trials still prepare their own
        print(f"preparing failed ({type(err).__name__}): each trial prepares its own", file=sys.stderr)
        return
    print(f"prepared in {time.perf_counter() - began:.1f} s ({'; '.join(done)})", file=sys.stderr)
