"""One console line whenever a trial reports or ends: counts, the best so far, budget left."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from ray import tune

from orchestrator.tracking import trial_number


class ProgressCallback(tune.Callback):
    def __init__(self, metric: str, mode: str, num_samples: int, time_budget_s: float | None,
                 zero_based: bool = False):
        self.metric, self.mode, self.num_samples = metric, mode, num_samples
        self.zero_based = zero_based
        self.time_budget_s = time_budget_s

    def setup(self, **info):
        self.started = time.monotonic()
        self.best: tuple[float, str] | None = None
        self.stopped_early: set[str] = set()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            better = (self.best is None or (value < self.best[0] if self.mode == "min"
                                            else value > self.best[0]))
            if better:
                self.best = (value, self._name(trial))
        self._print(trials, f"{self._name(trial)} epoch {result.get('epoch', '?')} "
                            f"{self.metric} {_fmt(value)}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        if last.get("diverged"):
            what = f"diverged: {last.get('stop_reason', '')[:80]}"
        elif last.get("epoch", 0) < trial.config.get("epochs", math.inf):
            self.stopped_early.add(trial.trial_id)
            what = f"stopped early after epoch {last.get('epoch')}"
        else:
            what = "finished"
        self._print(trials, f"{self._name(trial)} {what}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._print(trials, f"{self._name(trial)} FAILED (see the MLflow run's gansweep.error tag)")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._print(trials, f"{self._name(trial)} failed, retrying from its last checkpoint")

    def _name(self, trial: Any) -> str:
        return f"t{trial_number(trial, self.zero_based):03d}"

    def _print(self, trials: list[Any], event: str) -> None:
        states: dict[str, int] = {}
        for t in trials:
            state = "stopped" if t.trial_id in self.stopped_early else t.status.lower()
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
