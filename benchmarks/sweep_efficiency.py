"""Sweep efficiency: how much of the slots' time a real sweep spends training, cold and warm.

    python -m benchmarks.sweep_efficiency [--quick] [--repeats N] [--json PATH]

Each round runs `python -m orchestrator sweep` (a subprocess, a local Ray instance, its own sqlite
store) twice with GANSWEEP_CACHE pointing at a new empty folder: cold (the evaluator network is
not there yet) and then warm (the same folder, now filled). The quick sweep is the quickstart made
small with --set (4 trials, 2 at a time, 2 epochs of 2,048 images, FIFO, no collapse rule: every
trial trains a known amount); the full one is the quickstart as shipped (8 trials, ASHA). From the
MLflow record:

- training: the sum over trials of their epochs' `epoch_time_s`;
- efficiency: training / (slots x the span of the trial runs, first start to last end), and
  training / (slots x the whole command's wall time);
- preparation: what the sweep reports before its first trial (`prepared in X s`);
- start-up: for each trial, from its run's start (Tune starting it) to its first epoch's start
  (the first epoch's logging time minus its `epoch_time_s`), the median over trials.

Then one trial's start-up split into its parts, timed in a fresh process with the same config and
the warm cache: imports, data load, models, evaluator load, the real images' features for FID/KID,
and the first batch. Rounds repeat cold then warm; the median of the rounds is shown; the JSON
also holds each trial's timeline (run start, first epoch start, last epoch logged, run end).
`--device` is accepted for the common interface: the sweep runs where the quickstart's resources
say (the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import Table, median, parser, publish

ROOT = Path(__file__).resolve().parents[1]
SLOTS = 2  # the quickstart's max_concurrent
QUICK_SETS = ("num_samples=4", f"max_concurrent={SLOTS}", "epochs=2", "max_train=2048",
              "scheduler={type: fifo}", "stop_when=false")
STARTUP_PARTS = ("imports", "data", "models", "evaluator", "real features", "first batch")


def sweep(folder: Path, cache: Path, quick: bool) -> dict[str, Any]:
    """One `sweep` subprocess in `folder` against `cache`; its figures read back from MLflow."""
    sets = [arg for value in QUICK_SETS for arg in ("--set", value)] if quick else []
    command = [sys.executable, "-m", "orchestrator", "sweep", *sets, "--storage", str(folder / "sweeps"),
               "--tracking-uri", f"sqlite:///{folder}/mlflow.db"]
    began = time.time()
    done = subprocess.run(command, cwd=folder, env={**os.environ, "GANSWEEP_CACHE": str(cache)},
                          capture_output=True, text=True)
    wall = time.time() - began
    if done.returncode:
        raise RuntimeError(f"sweep failed ({done.returncode}):\n{done.stderr[-3000:]}")
    prepared = re.search(r"prepared in ([\d.]+) s", done.stderr)
    return {"wall_s": wall, "prepare_s": float(prepared.group(1)) if prepared else 0.0,
            **record(f"sqlite:///{folder}/mlflow.db", wall)}


def record(uri: str, wall: float) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("quickstart").experiment_id
    trials = [run for run in client.search_runs([experiment]) if "mlflow.parentRunId" in run.data.tags]
    first = min(r.info.start_time for r in trials)
    training, startups, timeline = 0.0, [], []
    for run in sorted(trials, key=lambda r: r.info.start_time):
        epochs = sorted(client.get_metric_history(run.info.run_id, "epoch_time_s"), key=lambda m: m.step)
        training += sum(m.value for m in epochs)
        if epochs:
            startups.append(epochs[0].timestamp / 1000 - epochs[0].value - run.info.start_time / 1000)
            timeline.append([round((t - first) / 1000, 2) for t in (
                run.info.start_time, epochs[0].timestamp - 1000 * epochs[0].value, epochs[-1].timestamp,
                run.info.end_time)])
    span = (max(r.info.end_time for r in trials) - first) / 1000
    return {"trials": len(trials), "training_s": training, "span_s": span,
            "efficiency": training / (SLOTS * span), "efficiency_wall": training / (SLOTS * wall),
            "startup_s": median(startups), "timeline": timeline}


def startup_parts(cache: Path, quick: bool) -> dict[str, float]:
    """One trial's start-up in a fresh process, part by part."""
    overrides = {"max_train": 2048, "epochs": 2} if quick else {}
    done = subprocess.run([sys.executable, "-m", "benchmarks.sweep_efficiency", "--startup-parts",
                           json.dumps(overrides)], cwd=ROOT, env={**os.environ, "GANSWEEP_CACHE": str(cache)},
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_startup(overrides: dict[str, Any]) -> dict[str, float]:
    """The quickstart's first config (start_from) built as a trial builds it, each part timed."""
    began = time.perf_counter()
    from unittest import mock

    from trainers import data, evaluator, gan, metrics
    from trainers.models import gan as models

    times = {"imports": time.perf_counter() - began}

    def timed(part: str, function):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                times[part] = time.perf_counter() - start
        return call

    from orchestrator.space.loading import load_space

    space = load_space(ROOT / "search_spaces" / "quickstart.yaml")
    config = gan.resolve("dcgan", {**space.fixed, **space.start_from[0], **overrides})
    with mock.patch.object(data, "load", timed("data", data.load)), \
         mock.patch.object(models, "build", timed("models", models.build)), \
         mock.patch.object(evaluator, "load_or_train", timed("evaluator", evaluator.load_or_train)), \
         mock.patch.object(gan, "SampleQuality", timed("real features", metrics.SampleQuality)):
        task = gan.GanTask(config)
    real, labels = next(task.data.train.batches(config["batch_size"], shuffle=True, drop_last=True))
    start = time.perf_counter()
    task.step(real, None, 0.0, True).tolist()  # waits for the step
    times["first batch"] = time.perf_counter() - start
    return times


def measure(quick: bool, repeats: int) -> list[dict[str, Any]]:
    rounds = []
    for repeat in range(repeats):
        with tempfile.TemporaryDirectory(prefix="gansweep-efficiency-") as tmp:
            cache = Path(tmp) / "cache"
            cache.mkdir()
            result: dict[str, Any] = {}
            for state in ("cold", "warm"):
                print(f"round {repeat + 1}/{repeats}: {state} sweep ...", file=sys.stderr, flush=True)
                folder = Path(tmp) / state
                folder.mkdir()
                result[state] = sweep(folder, cache, quick)
                print(f"  {json.dumps(result[state])}", file=sys.stderr)
            result["parts"] = startup_parts(cache, quick)
            rounds.append(result)
    return rounds


def tables(quick: bool, device: str, repeats: int | None = None) -> list[Table]:
    repeats = repeats or (1 if quick else 2)
    rounds = measure(quick, repeats)

    def mid(state: str, key: str) -> float:
        return median([r[state][key] for r in rounds])

    size = "4 trials x 2 epochs, 2 at a time, FIFO" if quick else "the quickstart as shipped (8 trials, ASHA)"
    rows = [(state, mid(state, "efficiency"), mid(state, "efficiency_wall"), mid(state, "training_s"),
             mid(state, "span_s"), mid(state, "wall_s"), mid(state, "prepare_s"), mid(state, "startup_s"))
            for state in ("cold", "warm")]
    cold, warm = mid("cold", "efficiency"), mid("warm", "efficiency")
    sweep_table = Table(
        name="sweep_efficiency",
        title=f"Sweep efficiency: training time / (slots x wall time), {size}, {SLOTS} slots, "
              f"median of {repeats} round(s)",
        header=("cache", "efficiency (trial span)", "efficiency (command)", "training s", "trial span s",
                "command s", "preparing s", "trial start-up s"),
        rows=rows,
        notes=[f"Target: at least 0.8 warm ({'met' if warm >= 0.8 else f'missed by {0.8 - warm:.2f}'}); "
               f"cold within 10 % of warm ({'met' if cold >= 0.9 * warm else 'missed'}: cold/warm "
               f"{cold / warm:.2f} over the trial span)."],
        details={"rounds": rounds, "quick_sets": list(QUICK_SETS) if quick else []})
    parts = [median([r["parts"][p] for r in rounds]) for p in STARTUP_PARTS]
    parts_table = Table(
        name="trial_startup",
        title="One trial's start-up with a warm cache, s: in the sweep (its run's start to its first "
              "epoch's start, median), and its parts timed in a fresh process",
        header=("in the sweep", *STARTUP_PARTS),
        rows=[(mid("warm", "startup_s"), *parts)],
        notes=["The parts do not add up to the sweep's figure: a Ray worker has Python, Ray and numpy "
               "imported before Tune starts the trial, and imports the trainer while Tune places it.",
               "The evaluator's training (cold) is the cold sweep's preparing time, made once per node "
               "before the first trial."])
    return [sweep_table, parts_table]


def main(argv: list[str] | None = None) -> int:
    options = parser("sweep_efficiency", __doc__, "a small sweep, one round (~4 min)", "accepted and ignored")
    options.add_argument("--repeats", type=int, default=None, help="rounds of cold + warm (1 quick, 2)")
    options.add_argument("--startup-parts", metavar="JSON", help=argparse.SUPPRESS)  # the fresh process
    args = options.parse_args(argv)
    if args.startup_parts is not None:
        print(json.dumps(time_startup(json.loads(args.startup_parts))))
        return 0
    return publish("sweep_efficiency", args, tables(args.quick, args.device, args.repeats), "cpu")


if __name__ == "__main__":
    sys.exit(main())
