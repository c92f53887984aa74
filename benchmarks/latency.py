"""Command latency: how long gansweep's commands take to answer, against MLflow's own CLI.

    python -m benchmarks.latency [--quick] [--repeats N] [--json PATH]

Each figure is the wall time of a fresh subprocess (Python start, imports, the command itself):
`python -c pass` (the floor), `python -m orchestrator --help`, `promote --help`, and
`report <experiment>` on a local sqlite store, against `mlflow runs list --experiment-id <id>` on
the same store. The store is prepared once: one sweep as the tracking callback records it (a parent
run tagged as a sweep, 16 trial runs nested under it with params, 10 epochs of metrics each, and
their status tags), so `report` ranks real runs. After one warm-up round (disk caches, .pyc files)
the commands alternate round after round, so that drift in the machine's load hits all of them;
the table gives the median of the rounds and its ratio to the median of `mlflow runs list`, and
the median CPU time (user + system) of each command: on a busy machine the wall time grows with
the load, the CPU time much less, so it says what the command would take on a quiet one.
`--device` is accepted for the common interface and ignored: nothing here uses an accelerator.
"""

from __future__ import annotations

import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.report import Table, median, parser, publish

EXPERIMENT = "latency-bench"
TRIALS, EPOCHS = 16, 10
BASELINE = "mlflow runs list"


def prepare_store(folder: Path) -> tuple[str, str]:
    """A sqlite store holding one finished sweep, logged as orchestrator/tracking/callback.py logs one:
    returns (tracking URI, experiment id)."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from orchestrator.tracking import tags

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment(EXPERIMENT, artifact_location=(folder / "artifacts").as_uri())
    parent = client.create_run(experiment, run_name="sweep bench", tags={
        tags.ROLE: "sweep", tags.TRAINER: "dcgan", tags.METRIC: "fid", tags.MODE: "min",
        tags.SAMPLER: "tpe", tags.SCHEDULER: "asha"}).info.run_id
    rng = random.Random(0)
    for index in range(1, TRIALS + 1):
        config = {"lr": 10 ** rng.uniform(-4.5, -3), "beta1": round(rng.uniform(0.0, 0.9), 3),
                  "loss": rng.choice(["bce", "lsgan", "hinge"]), "batch_size": rng.choice([32, 64]),
                  "epochs": EPOCHS, "dataset": "mnist5k"}
        run = client.create_run(experiment, run_name=f"t{index:03d}", tags={
            "mlflow.parentRunId": parent, tags.TRIAL_ID: f"bench_{index:05d}", tags.STATUS: "running",
            tags.TRAINER: "dcgan"}).info.run_id
        client.log_batch(run, params=[Param(k, str(v)) for k, v in sorted(config.items())])
        for epoch in range(1, EPOCHS + 1):
            fid = 300 * math.exp(-epoch * config["lr"] * 2000) + rng.uniform(0, 20)
            values = {"epoch": epoch, "fid": fid, "kid": fid / 1000, "g_loss": rng.uniform(0.5, 3),
                      "d_loss": rng.uniform(0.2, 1.4), "epoch_time_s": rng.uniform(5, 9)}
            now = int(time.time() * 1000)
            client.log_batch(run, metrics=[Metric(k, float(v), now, epoch) for k, v in values.items()])
        client.set_tag(run, tags.STATUS, "finished")
        client.set_terminated(run, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return uri, experiment


def commands(uri: str, experiment_id: str) -> dict[str, tuple[list[str], float | None]]:
    """Label -> (argv, target in seconds or None)."""
    python = sys.executable
    return {
        "python -c pass": ([python, "-c", "pass"], None),
        "orchestrator --help": ([python, "-m", "orchestrator", "--help"], 1.0),
        "orchestrator promote --help": ([python, "-m", "orchestrator", "promote", "--help"], 1.0),
        "orchestrator report": ([python, "-m", "orchestrator", "report", EXPERIMENT,
                                 "--tracking-uri", uri], 2.0),
        BASELINE: ([python, "-m", "mlflow", "runs", "list", "--experiment-id", experiment_id], None),
    }


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one run of the command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def tables(quick: bool, device: str, repeats: int | None = None) -> list[Table]:
    repeats = repeats or (3 if quick else 5)
    with tempfile.TemporaryDirectory() as tmp:
        print("preparing the store ...", file=sys.stderr, flush=True)
        uri, experiment_id = prepare_store(Path(tmp))
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}  # what `mlflow runs list` reads
        cases = commands(uri, experiment_id)
        times: dict[str, list[float]] = {label: [] for label in cases}
        cpu: dict[str, list[float]] = {label: [] for label in cases}
        for repeat in range(repeats + 1):  # round 0 warms the disk cache and .pyc files
            print(f"round {repeat} of {repeats} ...", file=sys.stderr, flush=True)
            for label, (argv, _) in cases.items():
                seconds, cpu_seconds = timed(argv, env)
                if repeat:
                    times[label].append(seconds)
                    cpu[label].append(cpu_seconds)
    medians = {label: median(values) for label, values in times.items()}
    rows, notes = [], []
    for label, (_, target) in cases.items():
        met = "" if target is None else ("yes" if medians[label] < target else "no")
        rows.append((label, f"{medians[label]:.2f}", f"{median(cpu[label]):.2f}",
                     f"{medians[label] / medians[BASELINE]:.2f}",
                     "" if target is None else f"< {target:g} s", met))
        if met == "no":
            notes.append(f"{label}: {medians[label]:.2f} s misses its target of {target:g} s "
                         f"by {medians[label] - target:.2f} s.")
    return [Table(name="latency",
                  title=f"Command latency: wall time of a fresh process, median of {repeats} alternating "
                        f"rounds (store: 1 sweep, {TRIALS} trials x {EPOCHS} epochs)",
                  header=("command", "wall s", "CPU s", f"wall / `{BASELINE}`", "target (wall)", "met?"),
                  rows=rows, notes=notes, details={"wall_s": times, "cpu_s": cpu, "repeats": repeats,
                                                   "load_average": os.getloadavg()})]


def main(argv: list[str] | None = None) -> int:
    options = parser("latency", __doc__, "3 rounds instead of 5", "ignored: the commands run on the CPU")
    options.add_argument("--repeats", type=int, default=None, help="timed rounds (3 quick, 5)")
    args = options.parse_args(argv)
    return publish("latency", args, tables(args.quick, args.device, args.repeats), "cpu")


if __name__ == "__main__":
    sys.exit(main())
