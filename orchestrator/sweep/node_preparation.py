"""Before the first trial: the dataset every trial needs, made ready on every node that can run a
trial (trainers/prepare.py), one Ray task per node and data config, all at once; and for the GAN
trainers one evaluator network per data config, made on one node and staged in the sweep's
storage, from where every trial on every node loads it: a sweep's trials are all scored by the
same network, wherever they run or are retried. A node that joins later (autoscaling) is left to
its trials, which load the data under the cache's locks.

Without it the first trials of a sweep on a cold cache each wait on the cache's lock while one of
them trains the evaluator, and their slots idle for a minute. A dataset that cannot be found or
downloaded ends the sweep here, before any trial, with the trainer's own message.
"""

from __future__ import annotations

import dataclasses
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
from orchestrator.sweep import checkpoint_storage
from trainers import catalog, evaluator, runtime
from trainers.config import ConfigError
from trainers.prepare import DEFINING_KEYS, data_config, evaluator_file, prepare

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


def prepare_nodes(space: SearchSpace, staging: str) -> tuple[SearchSpace, dict[str, str]]:
    """Prepare the space's data configs on every node that can run a trial and, for a trainer whose
    metrics need it, stage one evaluator network per data config in the sweep's storage (`staging`),
    which every trial of the sweep then loads, on every node. Returns the space whose trials load
    them, and the digest of each (cache key -> digest). Raises SpaceError (exit 2, nothing in MLflow
    yet) when a dataset cannot be loaded."""
    fixed, skipped = data_configs(space)
    nodes = trial_nodes(space)
    if skipped or not nodes:
        why = skipped or "no node can run a trial yet"
        print(f"not preparing data before the trials ({why}): each trial prepares its own, and is scored "
              "by its node's evaluator network", file=sys.stderr)
        return space, {}
    spec = catalog.get(space.trainer)
    try:
        # On the device a trial would have: the CPU unless the trial holds a GPU (runtime.placed_device).
        configs = [data_config(space.trainer, {**values, "device": runtime.placed_device(
            values.get("device", spec.defaults["device"]), holds_gpu=bool(space.resources.gpu))})
            for values in fixed]
    except ConfigError as err:
        raise SpaceError(space.path, space.field_of(err.key), str(err)) from None
    datasets = ", ".join(dict.fromkeys(config["dataset"] for config in configs))
    what = "data and evaluator" if spec.needs_evaluator else "data"
    count = f"{len(nodes)} node{'s' if len(nodes) > 1 else ''}"
    print(f"preparing {datasets} {what} on {count} ...", file=sys.stderr, flush=True)
    began = time.perf_counter()
    # Tasks with a trial's resources (and so its torch threads: more threads than free cores make it
    # many times slower on a busy machine). Their functions are trainers.prepare's own, so a node
    # imports torch and the data code, not this module.
    resources = {"num_cpus": space.resources.cpu, "num_gpus": space.resources.gpu, "max_retries": 0}
    try:
        digests, done = {}, []
        if spec.needs_evaluator:  # one network per data config for the whole sweep, made on one node
            task = ray.remote(**resources)(evaluator_file).options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[0], soft=False))
            for key, data, did in ray.get([task.remote(config) for config in configs]):
                digests[key] = stage_evaluator(key, data, staging)
                done.append(did)
        task = ray.remote(**resources)(prepare)
        ready = ray.get([task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                         .remote(config, False) for node in nodes for config in configs])
        done = done or ready  # the evaluator's line says the data was ready too
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, ConfigError):  # the dataset cannot be loaded: no trial could run
            raise SpaceError(space.path, space.field_of(err.cause.key), str(err.cause)) from None
        print(f"preparing failed ({err.cause!r}): each trial prepares its own", file=sys.stderr)
        return space, {}
    except ray.exceptions.RayError as err:  # a node lost: the trials still prepare their own
        print(f"preparing failed ({type(err).__name__}): each trial prepares its own", file=sys.stderr)
        return space, {}
    took = time.perf_counter() - began
    print(f"prepared in {took:.1f} s ({'; '.join(sorted(set(done)))})", file=sys.stderr)
    if digests:
        space = dataclasses.replace(space, fixed={**space.fixed, "evaluator": staging})
    return space, digests


def stage_evaluator(key: str, data: bytes, staging: str) -> str:
    """Put an evaluator network in the sweep's storage, unless the sweep has one for that key already
    (a resumed sweep goes on with the network its first trials were scored by); its digest."""
    path = checkpoint_storage.join(staging, f"{key}.pt")
    kept = checkpoint_storage.read_file(path)
    if kept is None:
        checkpoint_storage.write_file(data, path)
    return evaluator.digest(kept if kept is not None else data)
