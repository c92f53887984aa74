"""One console line whenever a trial reports or ends: counts, the best so far, budget left."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from ray import tune

from orchestrator.space import objective
from orchestrator.sweep.outcome import COLLAPSED, CONFIG_ERROR, DIVERGED, FAILED, STOPPED_EARLY, outcome_of

ENDED = {STOPPED_EARLY: "stopped", COLLAPSED: "collapsed"}  # counted as these, not as Tune's "terminated"


class ProgressCallback(tune.Callback):
    def __init__(self, metric: str, mode: str, num_samples: int, time_budget_s: float | None,
                 default_epochs: int):
        self.metric, self.mode, self.num_samples = metric, mode, num_samples
        self.time_budget_s = time_budget_s
        self.default_epochs = default_epochs  # the trainer's, for a space that leaves `epochs` out

    def setup(self, **info):
        self.started = time.monotonic()
        self.best: tuple[float, str] | None = None
        self.ended: dict[str, str] = {}  # trial id -> its ENDED label

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(CONFIG_ERROR):
            return  # no epoch was trained; the trial's end says why
        value = result.get(self.metric)
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        if finite and (self.best is None or objective.is_better(value, self.best[0], self.mode)):
            self.best = (value, str(trial))
        self._print(trials, f"{trial} epoch {result.get('epoch', '?')} {self.metric} {_fmt(value)}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        outcome = outcome_of(trial, self.default_epochs)
        if outcome.status in ENDED:
            self.ended[trial.trial_id] = ENDED[outcome.status]
        what = {DIVERGED: f"diverged: {outcome.reason[:80]}", STOPPED_EARLY: outcome.reason,
                COLLAPSED: f"collapsed: {outcome.reason}", FAILED: f"failed, not retried: {outcome.reason}"}
        self._print(trials, f"{trial} {what.get(outcome.status, outcome.status)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._print(trials, f"{trial} FAILED (see the MLflow run's gansweep.error tag)")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._print(trials, f"{trial} failed, retrying from its last checkpoint")

    def _print(self, trials: list[Any], event: str) -> None:
        states: dict[str, int] = {}
        for t in trials:
            state = self.ended.get(t.trial_id, t.status.lower())
            states[state] = states.get(state, 0) + 1
        counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        elapsed = time.monotonic() - self.started
        best = f"best {self.metric} {_fmt(self.best[0])} ({self.best[1]})" if self.best else "no result yet"
        budget = ""
        if self.time_budget_s:
            budget = f" | budget left {_clock(max(0.0, self.time_budget_s - elapsed))}"
        print(f"[{_clock(elapsed)}] {len(trials)}/{self.num_samples} trials: {counts} | {best}{budget} "
              f"| {event}", file=sys.stderr, flush=True)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
