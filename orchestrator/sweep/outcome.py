"""How a trial ended, decided in one place: the MLflow run's status and tags and the console
line both come from `outcome_of`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.space import collapse

FINISHED, STOPPED_EARLY, DIVERGED, FAILED = "finished", "stopped_early", "diverged", "failed"
COLLAPSED = "collapsed"  # stopped by the space's stop_when (orchestrator/space/collapse.py)
LOST, INTERRUPTED = "lost", "interrupted"
BUDGET_RAN_OUT = "the sweep's time budget ran out"
CONFIG_ERROR = "config_error"  # the result key of a trial that a ConfigError ended (sweep/trial.py)


@dataclass(frozen=True)
class Outcome:
    status: str  # the gansweep.status tag
    run_status: str  # the MLflow run status: FINISHED, FAILED or KILLED
    reason: str = ""  # the gansweep.stop_reason tag (or the error, for a failed trial)

    @property
    def keeps_models(self) -> bool:
        """A trial that trained to a usable end (all or part of its epochs) has models to log."""
        return self.run_status == "FINISHED"


def can_be_best(status: str) -> bool:
    """A collapsed trial's metric can still look good (FID of one repeated digit, or its last ASHA
    rung), but its generator draws one picture: the leaderboard ranks it after the others and
    `promote` never picks it."""
    return status != COLLAPSED


LOST_OUTCOME = Outcome(LOST, "KILLED", "the driver died before Tune recorded this trial; --resume ran a new "
                                       "trial in its place")
INTERRUPTED_OUTCOME = Outcome(INTERRUPTED, "KILLED", "the sweep was interrupted; `sweep --resume` continues "
                                                     "this trial from its last checkpoint")


def planned_epochs(trial: Any, default_epochs: int) -> int:
    return int(trial.config.get("epochs", default_epochs))


def outcome_of(trial: Any, default_epochs: int, budget_ran_out: bool = False) -> Outcome:
    """The outcome of a Tune trial that has ended (or that the end of the sweep's time budget cut).

    default_epochs: the trainer's default, for a space that leaves `epochs` out.
    """
    last = trial.last_result or {}
    if trial.status == "ERROR":
        error = trial.get_error()
        return Outcome(FAILED, "FAILED", str(error)[-5000:] if error else "unknown error")
    if last.get(CONFIG_ERROR):  # a ConfigError in the trial: not retried, it would fail the same way
        return Outcome(FAILED, "FAILED", last[CONFIG_ERROR][-5000:])
    if last.get("diverged"):
        return Outcome(DIVERGED, "FAILED", last.get("stop_reason", "a loss became nan"))
    if last.get(collapse.RESULT_KEY):  # the verdict collapse.Stop left when it stopped the trial
        return Outcome(COLLAPSED, "FINISHED", last[collapse.RESULT_KEY])
    if budget_ran_out:
        return Outcome(STOPPED_EARLY, "FINISHED", BUDGET_RAN_OUT)
    epoch, planned = int(last.get("epoch", 0)), planned_epochs(trial, default_epochs)
    if epoch < planned:
        return Outcome(STOPPED_EARLY, "FINISHED", f"the scheduler stopped it after epoch {epoch} of "
                                                  f"{planned}")
    return Outcome(FINISHED, "FINISHED")
