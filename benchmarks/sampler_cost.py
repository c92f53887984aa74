"""Sampler cost: how long Optuna, through Ray Tune's OptunaSearch, takes to propose the next trial
once 100, 1,000 and 5,000 trials have finished, for each sampler a space can name.

    python -m benchmarks.sampler_cost [--quick] [--cap SECONDS] [--json PATH]

Every sampler searches the quickstart space (search_spaces/quickstart.yaml: lr and beta1 floats, the
loss and batch size categorical, ngf an int), with the searcher a sweep builds (orchestrator/sweep/run.py
`searcher`: OptunaSearch with the space's define-by-run and sampler, behind Tune's ConcurrencyLimiter).
nsga2 gets two metrics (fid and kid, as it needs); grid gets lr and beta1 in steps (37,332 points).
The history is made the way a sweep makes it: `suggest` then `on_trial_complete` with a synthetic
result (a smooth function of the params plus noise), trial after trial, so each sampler's own state
(CMA-ES and NSGA-II generations, the grid's visited points) is the one it would have.
`gp` (Optuna's GPSampler, which gansweep does not offer) is there for comparison: it keeps no state
but the trials, so its history is proposed by the random sampler through the same searcher, and GP
then proposes the timed trials.

At each history size the samplers take turns (so drift in the machine's load hits all of them): each
times `suggest` for up to 10 trials (fewer if they pass 30 s), completing each before the next;
the cell is the median in milliseconds and, in brackets, its ratio to the random sampler's (the
floor: OptunaSearch, the define-by-run and Optuna's bookkeeping). A proposal slower than the cap
(default 60 s, 20 s with --quick) is cut off and that sampler skips the larger histories.
`--quick`: 100 and 1,000 trials only. `--device` is accepted for the common interface and ignored.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from benchmarks.report import Table, parser, publish
from orchestrator.cli import QUICKSTART
from orchestrator.space.loading import load_space
from orchestrator.space.search_space import SearchSpace

SAMPLERS = ("random", "tpe", "cmaes", "nsga2", "grid", "gp")  # gp: not offered, for comparison
PROPOSALS, PROPOSALS_BUDGET_S = 10, 30.0
LOSS_PENALTY = {"bce": 0.0, "lsgan": 5.0, "hinge": 10.0}


def space_for(sampler: str, folder: Path) -> SearchSpace:
    """The quickstart space with this sampler (gp: tpe's space; its sampler is swapped in later)."""
    document = yaml.safe_load(QUICKSTART.read_text())
    document["sampler"] = {"type": "tpe" if sampler == "gp" else sampler, "seed": 0}
    if sampler == "nsga2":  # a Pareto front needs two metrics; several metrics take fifo
        document.update(metric=["fid", "kid"], mode=["min", "min"], scheduler={"type": "fifo", "max_t": 10})
    if sampler == "grid":  # every param needs a finite set of values
        document["params"]["lr"] = {"type": "float", "low": 1.0e-4, "high": 6.0e-4, "step": 1.0e-5}
        document["params"]["beta1"] = {"type": "float", "low": 0.0, "high": 0.6, "step": 0.01}
    path = folder / f"{sampler}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_space(path)


def synthetic_result(config: dict[str, Any], rng: random.Random) -> dict[str, float]:
    """A trial's final metrics: smooth in the params, best near lr 2.5e-4 and beta1 0.4, plus noise;
    kid prefers a lower beta1, so fid and kid trade off (a front for nsga2)."""
    fid = (100 * (math.log10(config["lr"]) + 3.6) ** 2 + 50 * (config["beta1"] - 0.4) ** 2
           + LOSS_PENALTY[config["loss"]] + (3.0 if config["batch_size"] == 32 else 0.0)
           - 0.05 * config["ngf"] + rng.gauss(0, 2))
    kid = 0.05 + 0.2 * (config["beta1"] - 0.1) ** 2 + 0.0001 * fid + rng.gauss(0, 0.002)
    return {"fid": fid, "kid": kid}


class TimeLimit(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeLimit in the main thread once `seconds` have passed (SIGALRM)."""
    def expire(*_: Any) -> None:
        raise TimeLimit

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Proposer:
    """One sampler's searcher, built as a sweep builds it, and the trials it has finished."""

    def __init__(self, sampler: str, folder: Path) -> None:
        import optuna

        from orchestrator.sweep.tuner import searcher

        self.sampler = sampler
        self.search = searcher(space_for(sampler, folder))  # ConcurrencyLimiter(OptunaSearch)
        self.study = self.search.searcher._ot_study
        self.own_sampler = optuna.samplers.GPSampler(seed=0) if sampler == "gp" else self.study.sampler
        self.finished = 0
        self.rng = random.Random(0)

    def _trial(self) -> float:
        """Propose one trial and finish it; return the seconds `suggest` took."""
        trial_id = f"{self.sampler}_{self.finished:05d}"
        began = time.perf_counter()
        config = self.search.suggest(trial_id)
        seconds = time.perf_counter() - began
        self.search.on_trial_complete(trial_id, synthetic_result(config, self.rng))
        self.finished += 1
        return seconds

    def fill(self, history: int) -> float:
        """Finish trials until `history` have; gp's are proposed by the random sampler. Returns seconds."""
        import optuna

        if self.sampler == "gp":
            self.study.sampler = optuna.samplers.RandomSampler(seed=self.finished)
        began = time.perf_counter()
        while self.finished < history:
            self._trial()
        self.study.sampler = self.own_sampler
        return time.perf_counter() - began

    def proposals(self, cap_s: float) -> list[float]:
        """Seconds per proposal, for up to PROPOSALS trials or PROPOSALS_BUDGET_S; TimeLimit past cap_s."""
        times: list[float] = []
        began = time.perf_counter()
        while len(times) < PROPOSALS and (not times or time.perf_counter() - began < PROPOSALS_BUDGET_S):
            with time_limit(cap_s):
                times.append(self._trial())
        return times


def tables(quick: bool, device: str, cap_s: float | None = None) -> list[Table]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Define-by-run function")  # Ray's, for each slow GP proposal
    cap_s = cap_s or (20.0 if quick else 60.0)
    histories = (100, 1000) if quick else (100, 1000, 5000)
    ms: dict[str, dict[int, list[float]]] = {s: {} for s in SAMPLERS}
    fill_s: dict[str, dict[int, float]] = {s: {} for s in SAMPLERS}
    skipped: dict[str, int] = {}  # sampler -> the history at which a proposal passed the cap
    with tempfile.TemporaryDirectory() as tmp:
        proposers = [Proposer(sampler, Path(tmp)) for sampler in SAMPLERS]
        for history in histories:
            for p in proposers:
                if p.sampler in skipped:
                    continue
                print(f"{p.sampler}: {history} finished trials ...", file=sys.stderr, flush=True)
                fill_s[p.sampler][history] = p.fill(history)
                try:
                    ms[p.sampler][history] = [1000 * s for s in p.proposals(cap_s)]
                except TimeLimit:
                    skipped[p.sampler] = history
    medians = {s: {h: statistics.median(v) for h, v in by_size.items()} for s, by_size in ms.items()}

    def cell(sampler: str, history: int) -> str:
        if history in medians[sampler]:
            ratio = medians[sampler][history] / medians["random"][history]
            return f"{medians[sampler][history]:,.1f} ({ratio:,.0f}x)" if ratio >= 10 else \
                f"{medians[sampler][history]:.1f} ({ratio:.1f}x)"
        return f"skipped: > {cap_s:g} s" if sampler in skipped else "-"

    rows = [(s + (" (not offered)" if s == "gp" else ""), *(cell(s, h) for h in histories)) for s in SAMPLERS]
    notes = ["History made by suggest + on_trial_complete through OptunaSearch, as in a sweep "
             "(gp: by the random sampler, then GP proposes). Filling took "
             + ", ".join(f"{s} {sum(fill_s[s].values()):.0f} s" for s in SAMPLERS) + "."]
    return [Table(name="sampler_cost",
                  title=f"Sampler cost: ms per proposal (OptunaSearch.suggest) after N finished trials "
                        f"of the quickstart space, median of up to {PROPOSALS} (ratio to random)",
                  header=("sampler", *(f"{h:,} trials" for h in histories)), rows=rows, notes=notes,
                  details={"ms_per_proposal": ms, "fill_s": fill_s, "cap_s": cap_s,
                           "skipped_from": skipped})]


def main(argv: list[str] | None = None) -> int:
    options = parser("sampler_cost", __doc__, "histories of 100 and 1,000 trials only",
                     "ignored: the samplers run on the CPU")
    options.add_argument("--cap", type=float, default=None, help="seconds one proposal may take "
                         "(20 quick, 60)")
    args = options.parse_args(argv)
    return publish("sampler_cost", args, tables(args.quick, args.device, args.cap), "cpu")


if __name__ == "__main__":
    sys.exit(main())
