"""One rule for how a trial ended, shared by the MLflow record and the console."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from orchestrator.space.collapse import RESULT_KEY
from orchestrator.sweep.outcome import BUDGET_RAN_OUT, outcome_of


def trial(status: str = "TERMINATED", config: dict | None = None, error: str | None = None, **last):
    return SimpleNamespace(status=status, config=config or {}, last_result=last,
                           get_error=lambda: RuntimeError(error) if error else None)


@pytest.mark.parametrize(("ended", "status", "run_status", "reason"), [
    # a space without `epochs`: the trainer's default decides (the console used to say "stopped early")
    (trial(epoch=25), "finished", "FINISHED", ""),
    (trial(config={"epochs": 8}, epoch=8), "finished", "FINISHED", ""),
    (trial(config={"epochs": 8}, epoch=2), "stopped_early", "FINISHED", "after epoch 2 of 8"),
    (trial(epoch=3, diverged=1, stop_reason="g_loss became nan"), "diverged", "FAILED", "g_loss became nan"),
    (trial(status="ERROR", error="CUDA out of memory", epoch=1), "failed", "FAILED", "CUDA out of memory"),
    # stopped by the collapse rule, which left its reason in the last result (orchestrator/space/collapse.py)
    (trial(config={"epochs": 8}, epoch=2, **{RESULT_KEY: "sample_diversity 3e-06 < 0.0001 at epoch 2"}),
     "collapsed", "FINISHED", "sample_diversity 3e-06 < 0.0001 at epoch 2"),
])
def test_outcome_of_an_ended_trial(ended, status, run_status, reason):
    outcome = outcome_of(ended, default_epochs=25)
    assert (outcome.status, outcome.run_status) == (status, run_status)
    assert reason in outcome.reason and bool(reason) == bool(outcome.reason)


def test_the_time_budget_cuts_a_running_trial():
    outcome = outcome_of(trial(config={"epochs": 8}, epoch=3), default_epochs=25, budget_ran_out=True)
    assert (outcome.status, outcome.reason) == ("stopped_early", BUDGET_RAN_OUT)
    assert outcome.keeps_models
