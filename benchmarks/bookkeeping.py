"""Driver bookkeeping: how many trial-epochs per second the driver's tracking callback records, and
how long each Tune event holds Tune's loop: writes queued (today's callback: one lane for sqlite,
SERVER_LANES writer threads for a server), queued on one lane only, and waited for (the callback as
it was: one writer, every event's writes done before the loop goes on).

    python -m benchmarks.bookkeeping [--quick] [--device auto|cpu|cuda] [--json PATH]

The callback (orchestrator/tracking/callback.py TrackingCallback) is driven directly, without Ray or
training: N trials start, report E epochs each (the GAN metric names, round-robin over the trials,
as fast as the loop takes them), with or without a checkpoint per epoch whose sample grid is
logged (artifact + MLflow image; the grid is a real one of the quickstart), and complete; the end
of the experiment drains the queue. A Tune experiment snapshot (which drains the queue) is taken
every SNAPSHOT_S of the run. Stores: (a) a local sqlite file, (b) `mlflow server` on loopback
(mlflow/serve, tests/services.py's Server) on a fresh PostgreSQL database, artifacts in a local
folder. The modes alternate within each repetition (same store, a new experiment each run);
the table shows medians over the repetitions. Every run is checked afterwards: each trial's run
holds each epoch's `fid` exactly once.

trial-epochs/s: N x E over the time from the first event until everything is written. Loop block:
the time one Tune event spends in the callback (start, result, checkpoint, complete), median and
p99 over the run's events; snapshot and end drains are listed apart. Last, the tracking overhead:
the loop time the callback adds per trial-epoch, relative to the epoch time of one quickstart
trial (its first config, evaluator left untrained) measured here.
"""

from __future__ import annotations

import json
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from benchmarks.report import Table, median, parser, publish

ROOT = Path(__file__).resolve().parents[1]
MODES = ("synchronous", "queued, 1 lane", "queued")
SNAPSHOT_S = 10.0  # Tune's experiment snapshots come every 10 s or more (TUNE_GLOBAL_CHECKPOINT_S=auto)
TARGET_RATE = 100  # trial-epochs/s against a server (issue 9)


class FakeTrial:
    """What the callback reads of a Tune trial."""

    def __init__(self, number: int, config: dict[str, Any]):
        self.trial_id, self.label, self.config = f"bench_{number:05d}", f"t{number:03d}", config
        self.num_failures, self.checkpoint, self.status, self.last_result = 0, None, "RUNNING", {}

    def __str__(self) -> str:
        return self.label

    def get_error(self) -> None:
        return None


def callback_class(mode: str):
    """The tracking callback as it is (queued: one lane for sqlite, SERVER_LANES for a server), with
    one lane only, or as it was before the queue: one writer, and each event returns once its
    writes are done."""
    from orchestrator.tracking.callback import TrackingCallback
    from orchestrator.tracking.record_queue import RecordQueue

    class WaitingQueue(RecordQueue):
        def submit(self, fn, *args):
            super().submit(fn, *args)
            self.drain()

        def merge(self, key, fn, item):
            super().merge(key, fn, item)
            self.drain()

    class OneLane(TrackingCallback):
        def setup(self, **info):
            super().setup(**info)
            self.lanes = [(WaitingQueue if mode == "synchronous" else RecordQueue)("tracking")]

    return TrackingCallback if mode == "queued" else OneLane


def run_once(uri: str, mode: str, trials: int, epochs: int, checkpoints: list[Any] | None) -> dict[str, Any]:
    """One sweep's worth of events into a new experiment of the store; times and a check."""
    from mlflow import MlflowClient

    from orchestrator.space.loading import load_space
    from orchestrator.tracking import parent_run

    space = load_space(ROOT / "search_spaces" / "quickstart.yaml")
    client = MlflowClient(uri)
    experiment = parent_run.experiment_id(client, uri, f"bookkeeping-{mode}-{secrets.token_hex(3)}")
    parent = client.create_run(experiment, run_name="sweep").info.run_id
    callback = callback_class(mode)(uri, experiment, parent, space, {})
    callback.setup()
    metric_names = callback.spec.metrics
    config = {**space.document["fixed"], **space.start_from[0]}
    fakes = [FakeTrial(i + 1, dict(config)) for i in range(trials)]
    blocks: list[float] = []
    drains: list[float] = []
    grids: list[float] = []  # the on_checkpoint events alone

    def event(hook, *args, **kwargs) -> None:
        began = time.perf_counter()
        hook(*args, **kwargs)
        blocks.append(time.perf_counter() - began)
        if hook == callback.on_checkpoint:
            grids.append(blocks[-1])

    began = last_snapshot = time.perf_counter()
    callback.on_step_begin(0, fakes)
    for trial in fakes:
        event(callback.on_trial_start, 0, fakes, trial)
    for epoch in range(1, epochs + 1):
        for trial in fakes:
            result = {name: 1.0 / (epoch + len(name)) for name in metric_names}
            result.update(epoch=epoch, training_iteration=epoch, time_this_iter_s=1.0, done=False,
                          trial_id=trial.trial_id, node_id="bench-node", cuda_visible_devices="",
                          config=trial.config)
            trial.last_result = result
            event(callback.on_trial_result, epoch, fakes, trial, result)
            if checkpoints:
                event(callback.on_checkpoint, epoch, fakes, trial, checkpoints[epoch - 1])
        if time.perf_counter() - last_snapshot >= SNAPSHOT_S:
            snap = time.perf_counter()
            callback.get_state()
            drains.append(time.perf_counter() - snap)
            last_snapshot = time.perf_counter()
    for trial in fakes:
        trial.status = "TERMINATED"
        event(callback.on_trial_complete, epochs, fakes, trial)
    end = time.perf_counter()
    callback.on_experiment_end(fakes)
    drains.append(time.perf_counter() - end)
    seconds = time.perf_counter() - began
    check(client, experiment, parent, trials, epochs)
    blocks.sort()
    return {"trial_epochs_per_s": trials * epochs / seconds, "seconds": seconds,
            "block_ms_median": 1000 * statistics.median(blocks),
            "block_ms_p99": 1000 * blocks[min(len(blocks) - 1, int(0.99 * len(blocks)))],
            "drains_s": drains, "events": len(blocks),
            "checkpoint_ms_median": 1000 * statistics.median(grids) if grids else None,
            "loop_ms_per_trial_epoch": 1000 * sum(blocks) / (trials * epochs)}


def check(client, experiment: str, parent: str, trials: int, epochs: int) -> None:
    """Nothing lost, nothing twice: each trial's run holds each epoch's fid once, and is closed."""
    runs = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
                              max_results=1000)
    if len(runs) != trials:
        raise AssertionError(f"{len(runs)} runs for {trials} trials")
    for run in runs:
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "fid"))
        if steps != list(range(1, epochs + 1)) or run.info.status != "FINISHED":
            raise AssertionError(f"run {run.info.run_id}: fid steps {steps}, status {run.info.status}")


def quickstart_epoch(workdir: Path, epochs: int) -> tuple[list[float], Path]:
    """Wall seconds of each epoch of the quickstart's first trial, and a copy of its sample grid."""
    from orchestrator.space.loading import load_space
    from trainers import catalog, evaluator
    from trainers.evaluator import EvaluatorNet

    space = load_space(ROOT / "search_spaces" / "quickstart.yaml")
    config = {**space.document["fixed"], **space.start_from[0], "epochs": epochs, "device": "cpu"}
    stamps, grid = [time.perf_counter()], workdir / "samples.png"

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        stamps.append(time.perf_counter())
        if checkpoint_dir and not grid.exists():
            shutil.copy(Path(checkpoint_dir) / "samples.png", grid)

    def untrained(config, data, device):  # the evaluator's training is a once-per-node cost
        return EvaluatorNet(data.channels, max(data.num_classes, 2)).to(device).eval(), "untrained"

    with mock.patch.object(evaluator, "load_or_train", untrained):
        catalog.get("dcgan").train(config, report)
    return [b - a for a, b in zip(stamps[1:-1], stamps[2:], strict=True)], grid  # the first is a warm-up


def checkpoint_folders(workdir: Path, grid: Path, epochs: int) -> list[Any]:
    from ray import tune

    folders = []
    for epoch in range(1, epochs + 1):
        folder = workdir / f"checkpoint_{epoch:06d}"
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({"epoch": epoch}))
        shutil.copy(grid, folder / "samples.png")
        folders.append(tune.Checkpoint.from_directory(str(folder)))
    return folders


def round_trip_ms(url: str, times: int = 10) -> float:
    """Median time of GET /health on one kept-alive connection: the floor of every request."""
    import http.client

    host, port = url.split("//", 1)[1].split(":")
    connection, took = http.client.HTTPConnection(host, int(port), timeout=10), []
    for _ in range(times):
        began = time.perf_counter()
        connection.request("GET", "/health")
        connection.getresponse().read()
        took.append(1000 * (time.perf_counter() - began))
    connection.close()
    return statistics.median(took)


@contextmanager
def postgres_server(workdir: Path) -> Iterator[str]:
    """`mlflow server` (mlflow/serve, as the tests start it) on a new PostgreSQL database."""
    import psycopg2

    sys.path.insert(0, str(ROOT / "tests"))
    from services import PG_ADMIN, Server

    admin = psycopg2.connect(PG_ADMIN, connect_timeout=3)
    admin.autocommit = True
    name = f"gansweep_bench_{secrets.token_hex(4)}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    server = Server(workdir / "server.log", MLFLOW_BACKEND_STORE_URI=PG_ADMIN.rsplit("/", 1)[0] + "/" + name,
                    MLFLOW_ARTIFACTS_DESTINATION=str(workdir / "server-artifacts"))
    try:
        server.start()
        yield server.url
    finally:
        server.kill()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def measure(quick: bool) -> dict[str, Any]:
    trials, epochs, repeats = (8, 8, 2) if quick else (16, 16, 3)
    results: dict[str, Any] = {"trials": trials, "epochs": epochs, "repeats": repeats, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="gansweep-bookkeeping-") as tmp:
        workdir = Path(tmp)
        timed = 1 if quick else 2
        print(f"quickstart trial: 1 warm-up epoch + {timed} timed ...", file=sys.stderr, flush=True)
        epoch_s, grid = quickstart_epoch(workdir, 1 + timed)
        results["quickstart_epoch_s"], results["grid_bytes"] = epoch_s, grid.stat().st_size
        checkpoints = checkpoint_folders(workdir, grid, epochs)
        with postgres_server(workdir) as server_url:
            results["round_trip_ms"] = round_trip_ms(server_url)
            stores = {"sqlite": f"sqlite:///{workdir}/mlflow.db", "server + PostgreSQL": server_url}
            for store_name, uri in stores.items():
                modes = MODES if store_name != "sqlite" else ("synchronous", "queued")  # sqlite: 1 lane
                for pictures in (False, True):
                    case = results["cases"].setdefault(f"{store_name}|{pictures}", {})
                    for repeat in range(repeats):  # alternating: drift of the machine hits every mode
                        for mode in modes if repeat % 2 == 0 else modes[::-1]:
                            print(f"{store_name}, grids {pictures}, {mode}, repeat {repeat + 1} ...",
                                  file=sys.stderr, flush=True)
                            run = run_once(uri, mode, trials, epochs, checkpoints if pictures else None)
                            case.setdefault(mode, []).append(run)
    return results


def tables(quick: bool, device: str) -> list[Table]:
    results = measure(quick)
    rows, per_epoch = [], {}
    for key, modes in results["cases"].items():
        store_name, pictures = key.split("|")
        for mode, runs in modes.items():
            rate = median([r["trial_epochs_per_s"] for r in runs])
            block = median([r["block_ms_median"] for r in runs])
            p99 = median([r["block_ms_p99"] for r in runs])
            drain = median([max(r["drains_s"]) for r in runs])
            rows.append((store_name, "grid every epoch" if pictures == "True" else "metrics", mode, rate,
                         block, p99, drain))
            per_epoch[(key, mode)] = median([r["loop_ms_per_trial_epoch"] for r in runs])
    epoch_s = median(results["quickstart_epoch_s"])
    notes = [f"{results['trials']} trials x {results['epochs']} epochs, median of {results['repeats']} "
             f"repetitions (modes alternating); sample grid {results['grid_bytes'] / 1000:.0f} kB (the "
             f"quickstart's); a shared 2-core machine: compare rows of one run only."]
    cases = results["cases"]
    for store_name in ("sqlite", "server + PostgreSQL"):
        grid_ms = median([r["checkpoint_ms_median"] for r in cases[f"{store_name}|True"]["synchronous"]])
        notes.append(f"{store_name}: a sample grid (log_artifact + log_image) costs {grid_ms:.0f} ms to "
                     f"record (median on_checkpoint event, synchronous)")
        for mode in ("synchronous", "queued"):
            loop_ms = per_epoch[(f"{store_name}|True", mode)]
            notes.append(f"{store_name}, {mode}: {loop_ms:.2f} ms of loop time per trial-epoch (all its "
                         f"events, grids logged) = {100 * loop_ms / 1000 / epoch_s:.3f} % "
                         f"of a quickstart epoch ({epoch_s:.1f} s)")
    notes.append(f"server round trip: GET /health on a kept-alive connection takes "
                 f"{results['round_trip_ms']:.0f} ms (every request's floor on this server)")
    for pictures, what in (("False", "metrics"), ("True", "a grid every epoch")):
        rate = median([r["trial_epochs_per_s"] for r in cases[f"server + PostgreSQL|{pictures}"]["queued"]])
        verdict = "met" if rate >= TARGET_RATE else f"missed by {100 * (1 - rate / TARGET_RATE):.0f} %"
        notes.append(f"target {TARGET_RATE} trial-epochs/s against the server, {what}: {rate:.0f}, {verdict}")
    table = Table("bookkeeping", "Driver bookkeeping: trial-epochs recorded per second and Tune's loop "
                  "blocked per event, writes waited for (synchronous) vs queued",
                  ("store", "logged", "mode", "trial-epochs/s", "loop block ms median", "p99",
                   "largest drain s (snapshot or end)"), rows, notes, results)
    return [table]


def main(argv: list[str] | None = None) -> int:
    args = parser("bookkeeping", __doc__, "8 trials x 8 epochs, 2 repetitions",
                  "ignored: bookkeeping runs on the CPU").parse_args(argv)
    return publish("bookkeeping", args, tables(args.quick, args.device), "cpu")


if __name__ == "__main__":
    sys.exit(main())
