"""The search-space file's schema: every field a space may have, its type and default.

pydantic checks the shapes (an unknown field, a string where a number belongs); `checks.py`
checks what the fields mean together. `docs/search-space.md` documents every field here, and
tests/test_docs.py fails when the two drift apart.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SAMPLERS = ("tpe", "random", "grid", "cmaes", "nsga2")
SCHEDULERS = ("asha", "median", "fifo", "pbt")
PARAM_TYPES = ("float", "int", "categorical")
MODES = ("min", "max")
# Scheduler fields each type reads; max_t (the epoch a trial stops at) applies to all.
SCHEDULER_FIELDS = {"asha": {"grace_period", "reduction_factor"}, "median": {"grace_period"},
                    "fifo": set(), "pbt": {"perturbation_interval"}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class SamplerSpec(_Strict):
    type: str = "tpe"
    seed: int = 0
    n_startup_trials: int | None = Field(None, ge=0)  # nsga2: the population size


class SchedulerSpec(_Strict):
    type: str | None = None  # asha, or fifo for several metrics
    max_t: int | None = Field(None, ge=1)
    grace_period: int | None = Field(None, ge=1)
    reduction_factor: float | None = Field(None, gt=1)
    perturbation_interval: int | None = Field(None, ge=1)


class Param(_Strict):
    type: str
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None
    choices: list[Any] | None = None
    when: dict[str, Any] = Field(default_factory=dict)  # every entry must hold: {param: value or [values]}


class SpaceFile(_Strict):
    name: str = Field(min_length=1)
    trainer: str
    metric: str | list[str]
    mode: str | list[str]
    num_samples: int = Field(8, ge=1)
    max_concurrent: int = Field(2, ge=1)
    resources: Resources = Field(default_factory=Resources)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    max_failures: int = Field(2, ge=-1)  # -1: retry forever
    # A trial starts in the worker its slot's last trial ran in: no process start and imports
    # between trials (seconds each). false: a fresh worker process for every trial.
    reuse_actors: bool = True
    stop_when: Any = None  # the collapse rule's thresholds, or false (checked by _check_stop_when)
    fixed: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Param] = Field(default_factory=dict)
    start_from: list[dict[str, Any]] = Field(default_factory=list)  # configs tried first; the rest sampled

