"""The GAN-aware stop rule: a trial whose samples have collapsed is stopped at the end of the epoch
that shows it, whatever the scheduler, and ends as `collapsed` with the reason in its run.

A space's `stop_when` sets the rule (checked by orchestrator/space/checks.py): thresholds on
metrics the trainer reports, each judged on every epoch's result from `from_epoch` on, over the
trainer's default rule (`TrainerSpec.stop_when`: the GAN trainers' stops collapsed samples). `reason` is the
rule; `Stop` applies it for Tune and leaves its verdict in the result, where outcome.outcome_of
reads it. No Ray import here: loading a space must not import Ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RESULT_KEY = "collapsed"  # where `Stop` leaves the reason in the result
FROM_EPOCH, DEFAULT_FROM_EPOCH = "from_epoch", 2  # the first epoch judged: epoch 1 of a good run can look bad
DIRECTIONS = ("below", "above")

# The rule's own words for what a crossed threshold means (a trainer's default rule is on its spec).
MEANING = {"sample_diversity": "the samples have collapsed to nearly one image"}


@dataclass(frozen=True)
class Threshold:
    metric: str
    direction: str  # below | above
    value: float

    def crossed(self, value: float) -> bool:
        return value < self.value if self.direction == "below" else value > self.value

    def __str__(self) -> str:
        return f"{self.metric} {self.direction} {self.value:g}"


@dataclass(frozen=True)
class StopRule:
    from_epoch: int  # the first epoch whose result is judged
    thresholds: tuple[Threshold, ...]  # any one crossed stops the trial

    def __str__(self) -> str:
        return f"{' or '.join(map(str, self.thresholds))}, from epoch {self.from_epoch}"


def reason(result: Mapping[str, Any], rule: StopRule | None) -> str | None:
    """Why the trial that reported `result` has collapsed (or stalled, by the space's own thresholds),
    or None. A metric missing from the result, or not finite, is not judged."""
    epoch = result.get("epoch", 0)
    if rule is None or epoch < rule.from_epoch:
        return None
    for threshold in rule.thresholds:
        value = result.get(threshold.metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and threshold.crossed(value):
            sign = "<" if threshold.direction == "below" else ">"
            meaning = MEANING.get(threshold.metric)
            return (f"{threshold.metric} {value:.2g} {sign} {threshold.value:g} at epoch {epoch}"
                    + (f": {meaning}" if meaning else "") + " (the space's stop_when)")
    return None


class Stop:
    """Tune's stopping condition (`RunConfig(stop=Stop(rule))`), asked about every result before the
    scheduler: a trial that meets the rule stops at the end of that epoch and frees its slot, under
    ASHA, the median rule, FIFO or PBT alike (PBT's quantiles and synchronisation count live trials only).

    The reason goes into the result itself: Tune then records that dict as the trial's last result
    and hands it to the callbacks (TuneController._process_trial_result, ray 2.60), so the outcome
    and the MLflow run see the verdict made here, also after `--resume`.
    """

    def __init__(self, rule: StopRule):
        self.rule = rule

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        why = reason(result, self.rule)
        if why:
            result[RESULT_KEY] = why
        return why is not None
