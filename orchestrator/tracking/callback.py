"""MLflow bookkeeping of a sweep's trials, done on the driver: one child run per trial.

The driver is the only MLflow writer. Trials hand their metrics to Tune and their pictures and
weights to Tune's checkpoints; this callback logs them as Tune records them. So a child run is
created once per trial (found again by its `gansweep.trial_id` tag after a retry or --resume),
an epoch is logged once (results at or below the last logged epoch are skipped), and no trial
process ever opens the tracking store: no SQLite write contention, no credentials on workers.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from PIL import Image
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

from orchestrator.space.search_space import SearchSpace
from orchestrator.space.values import param_text
from orchestrator.sweep import interrupts
from orchestrator.sweep.outcome import (
    FAILED,
    INTERRUPTED_OUTCOME,
    LOST_OUTCOME,
    STOPPED_EARLY,
    Outcome,
    outcome_of,
)
from orchestrator.sweep.trial import EVALUATOR_KEY, GPUS_KEY, METRICS_FILE, NODE_KEY
from orchestrator.tracking import mlflow_store, model_logging, tags
from orchestrator.tracking.record_queue import RecordError, RecordQueue
from trainers import catalog

NOT_LOGGED = set(AUTO_RESULT_KEYS) | {"done", "trial_id", "iterations_since_restore", "diverged"}
SERVER_LANES = 8  # writer threads for a tracking server (benchmarks/bookkeeping.py measures 1 against 8)
BATCH_METRICS = 900  # MLflow's log_batch takes at most 1000 metrics, params and tags together


@dataclass(frozen=True)
class TrialState:
    """What the writer needs of a Tune trial, copied at the event: Tune goes on changing the trial."""
    trial_id: str
    label: str  # str(trial): t007
    config: dict[str, Any]
    num_failures: int
    checkpoint: Any  # its newest checkpoint (ray.tune.Checkpoint), or None

    @classmethod
    def of(cls, trial) -> TrialState:
        return cls(trial.trial_id, str(trial), copy.deepcopy(dict(trial.config)), trial.num_failures,
                   trial.checkpoint)


@dataclass
class TrialRecord:
    """What the record holds of one trial: its run and what has been logged to it. One per trial,
    read from the store once or made when the trial first starts; only lanes' writer threads touch
    it (each trial's by its own lane)."""
    run_id: str
    status: str  # the run's MLflow status when it was read or made: RUNNING, FINISHED, KILLED, ...
    logged_epoch: int = 0  # the last epoch logged: results at or below it are skipped
    params: dict[str, str] | None = None  # the config as last noted (PBT changes it); None: not read yet
    placements: list[dict[str, Any]] = field(default_factory=list)  # where its epochs ran
    evaluator: str | None = None  # the digest of the network that scored it, as last tagged
    config: dict[str, Any] | None = None  # as its run was made by this driver (run names tell them apart)
    created: bool = False  # made by this driver and not started yet: no update needed on its start
    open: bool = False  # started and not yet closed


class TrackingCallback(tune.Callback):
    """Pickled by Tune with the experiment (and unpickled by --resume): holds only names and ids,
    and reconnects to the tracking server when it is set up again.

    Tune's loop only copies what an event says and queues the writes: each trial's go to one lane
    (a `RecordQueue`: one writer thread, in order), so a run's record keeps its order. The lanes
    are drained before each of Tune's experiment snapshots (`get_state`), so a snapshot never knows
    a result that the record lacks: a driver killed with writes still queued loses only results
    that --resume has Tune report again. They are drained at the end (`on_experiment_end`, also
    after an error or Ctrl-C). A write that fails (after MLflow's own HTTP retries) stops its lane
    and fails the sweep at Tune's next event for that lane, or at the end.

    MLflow's own asynchronous logging (`log_batch(..., synchronous=False)`) is not used: it queues
    each call on one process-wide thread and reports a failure only to whoever waits on that call's
    future, so draining before a snapshot, stopping a trial's writes at its first failure and merging
    the epochs that piled up behind a slow server would all still be ours to write.

    Ctrl-C: Tune saves its state and returns from `fit()`; this callback notes the signal, closes
    the runs still open as interrupted (`--resume` reopens them) and ends the parent run KILLED, which
    is how the driver tells an interrupted sweep from a complete one.
    """

    def __init__(self, tracking_uri: str, experiment: str, parent: str, space: SearchSpace,
                 run_tags: dict[str, str]):
        self.tracking_uri, self.experiment, self.parent, self.space = tracking_uri, experiment, parent, space
        self.run_tags = run_tags  # on every trial's run: the models the sweep started from

    def setup(self, **info):
        mlflow.set_tracking_uri(self.tracking_uri)
        # MLflow prints a run's link when a server's run ends (one more request each); ours is the
        # sweep's ready view, printed at its end.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.spec = catalog.get(self.space.trainer)
        self.checked_lost = False
        self.interrupted = False
        interrupts.watch(self._note_interrupt)
        # Requests to a server mostly wait (on the network, on its database): several lanes overlap
        # them. A local SQLite store takes one writer at a time.
        lanes = SERVER_LANES if mlflow_store.is_server(self.tracking_uri) else 1
        self.lanes = [RecordQueue(f"tracking lane {i + 1}") for i in range(lanes)]
        self.lane_of: dict[str, RecordQueue] = {}  # trial id -> its lane (Tune's loop only)
        self.reading = threading.Lock()  # the record is read once, by the first lane that needs it
        self.client = MlflowClient(self.tracking_uri)  # the lanes' writer threads only
        self.records: dict[str, TrialRecord] | None = None  # trial id -> its record (None: not read yet)

    def __getstate__(self) -> dict[str, Any]:
        keep = ("tracking_uri", "experiment", "parent", "space", "run_tags")
        return {k: v for k, v in self.__dict__.items() if k in keep}

    def _note_interrupt(self) -> None:
        self.interrupted = True

    # -- Tune events: in Tune's loop, which only queues ------------------------------------------
    def on_step_begin(self, iteration, trials, **info):
        if not self.checked_lost:
            self.checked_lost = True
            self.lanes[0].submit(self._close_lost, {t.trial_id for t in trials})

    def on_trial_start(self, iteration, trials, trial, **info):
        self._lane(trial).submit(self._start, TrialState.of(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # A lane behind the loop logs the epochs that piled up for a trial in one call.
        self._lane(trial).merge(trial.trial_id, self._log_results, (TrialState.of(trial), dict(result)))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self._lane(trial).submit(self._log_pictures, TrialState.of(trial), checkpoint)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._lane(trial).submit(self._note_retry, TrialState.of(trial))

    def on_trial_error(self, iteration, trials, trial, **info):
        outcome = outcome_of(trial, self.spec.defaults["epochs"])
        self._lane(trial).submit(self._close, TrialState.of(trial), outcome)

    def on_trial_complete(self, iteration, trials, trial, **info):
        outcome = outcome_of(trial, self.spec.defaults["epochs"])
        self._lane(trial).submit(self._close, TrialState.of(trial), outcome)

    def on_experiment_end(self, trials, **info):
        """Trials still running when the sweep ends are closed too: cut by the time budget, or
        interrupted (Ctrl-C), in which case `--resume` opens their runs again. Then every write
        is waited for (the first failure is raised once every lane has stopped)."""
        for lane in self.lanes:
            mine = [t for t in trials if self.lane_of.get(t.trial_id) is lane]
            lane.submit(self._close_unfinished, mine, self.interrupted)
        failures = []
        for lane in self.lanes:
            try:
                lane.close()
            except RecordError as failure:
                failures.append(failure)
        if failures:
            raise failures[0]
        if self.interrupted:
            self.client.set_terminated(self.parent, "KILLED")

    def get_state(self) -> None:
        """Tune asks just before it writes its experiment snapshot: the record catches up first."""
        for lane in getattr(self, "lanes", []):
            lane.drain()
        return None  # nothing of ours goes into the snapshot

    def _lane(self, trial) -> RecordQueue:
        """A trial's writes all go to one lane, in order; new trials take the lanes in turn."""
        if trial.trial_id not in self.lane_of:
            self.lane_of[trial.trial_id] = self.lanes[len(self.lane_of) % len(self.lanes)]
        return self.lane_of[trial.trial_id]

    # -- records (the writer threads) ------------------------------------------------------------
    def record_of(self, trial: TrialState) -> TrialRecord:
        """The trial's record: read from the store, or its run made now."""
        self._read_record()
        if trial.trial_id not in self.records:
            self.records[trial.trial_id] = self._create(trial)
        return self.records[trial.trial_id]

    def _read_record(self) -> None:
        """The runs this sweep has (after --resume or a retry: found again by their trial id tag),
        read once: from then on the lanes know every run it has, and what each logged."""
        with self.reading:
            if self.records is None:
                self.records = self._records_in_store()

    def _records_in_store(self) -> dict[str, TrialRecord]:
        records, token = {}, None
        while True:
            page = self.client.search_runs(
                [self.experiment], filter_string=f"tags.`mlflow.parentRunId` = '{self.parent}'",
                max_results=1000, page_token=token)
            for run in page:
                trial_id = run.data.tags.get(tags.TRIAL_ID)
                if trial_id is None or trial_id in records:
                    continue  # newest first: the newest run of a trial is its run
                records[trial_id] = TrialRecord(
                    run.info.run_id, run.info.status, logged_epoch=int(run.data.metrics.get("epoch", 0)),
                    placements=json.loads(run.data.tags.get(tags.PLACEMENTS, "[]")),
                    evaluator=run.data.tags.get(tags.EVALUATOR))
            token = page.token
            if not token:
                return records

    def _create(self, trial: TrialState) -> TrialRecord:
        others = [record.config for record in list(self.records.values()) if record.config is not None]
        config, name = trial.config, self.space.run_name(trial.label, trial.config, others)
        run = self.client.create_run(self.experiment, run_name=name, tags={
            "mlflow.parentRunId": self.parent, tags.TRIAL_ID: trial.trial_id, tags.STATUS: "running",
            tags.TRAINER: self.space.trainer, **self.run_tags,
        })
        params = [Param(k, param_text(v)[:6000]) for k, v in sorted(config.items())]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run.info.run_id, params=params[start:start + 100])
        self.client.log_text(run.info.run_id, yaml.safe_dump(config, sort_keys=True), "config.yaml")
        return TrialRecord(run.info.run_id, "RUNNING", params={p.key: p.value for p in params}, created=True,
                           config=config)

    # -- writes (the writer threads) -------------------------------------------------------------
    def _close_lost(self, known: set[str]) -> None:
        """After --resume: close the runs of trials that Tune never saved before the driver died.

        Tune snapshots its state every few seconds; a trial started just before a kill has an
        MLflow run but is unknown to the restored Tune, which samples a replacement instead.
        """
        self._read_record()
        for trial_id, record in list(self.records.items()):
            if trial_id not in known and record.status == "RUNNING":
                self._record(record, LOST_OUTCOME)

    def _start(self, trial: TrialState) -> None:
        record = self.record_of(trial)
        if record.created:  # made just now: running, with its config as params
            record.created = False
        else:  # a retry, a PBT restart, or a run of the sweep before --resume
            self.client.update_run(record.run_id, status="RUNNING")
            self.client.set_tag(record.run_id, tags.STATUS, "running")
            self._note_new_config(record, trial)
        record.open = True

    def _note_new_config(self, record: TrialRecord, trial: TrialState) -> None:
        """PBT restarts a trial with mutated hyperparameters; params are immutable, so tag them."""
        if record.params is None:
            record.params = dict(self.client.get_run(record.run_id).data.params)
        changed = {k: param_text(v)[:6000] for k, v in trial.config.items()
                   if k in record.params and param_text(v)[:6000] != record.params[k]}
        since = record.logged_epoch + 1
        if changed and since <= trial.config.get("epochs", self.spec.defaults["epochs"]):
            self.client.set_tag(record.run_id, tags.config_from_epoch(since), json.dumps(changed))
            record.params.update(changed)

    def _log_results(self, results: list[tuple[TrialState, dict[str, Any]]]) -> None:
        """One trial's results in the order Tune gave them, in as few log_batch calls as MLflow allows."""
        record = self.record_of(results[0][0])
        metrics: list[Metric] = []
        run_tags: dict[str, RunTag] = {}  # key -> its newest value
        for _, result in results:
            epoch = int(result.get("epoch", 0))
            if epoch <= record.logged_epoch:
                continue  # already logged before a retry or a driver restart
            now = int(time.time() * 1000)
            metrics += [Metric(k, float(v), now, epoch) for k, v in result.items()
                        if k not in NOT_LOGGED and _is_number(v)]
            for tag in _placement_tags(record, epoch, result):
                run_tags[tag.key] = tag
            if (scored_by := result.get(EVALUATOR_KEY)) and scored_by != record.evaluator:
                run_tags[tags.EVALUATOR] = RunTag(tags.EVALUATOR, scored_by)
                record.evaluator = scored_by
            if result.get("diverged"):
                run_tags[tags.STOP_REASON] = RunTag(tags.STOP_REASON, result["stop_reason"])
            record.logged_epoch = epoch
        for start in range(0, len(metrics), BATCH_METRICS):
            self.client.log_batch(record.run_id, metrics=metrics[start:start + BATCH_METRICS],
                                  tags=list(run_tags.values()) if start == 0 else [])
        if run_tags and not metrics:
            self.client.log_batch(record.run_id, tags=list(run_tags.values()))

    def _log_pictures(self, trial: TrialState, checkpoint) -> None:
        """Each epoch's picture (the trainer's: a sample grid or a confusion matrix), read from the
        checkpoint in the sweep's storage.

        As a file, `<picture>/epoch_NNN.png` (a stable path: the registry's description names the
        champion's last one, and a user downloads it as it is), and for a trainer whose spec asks
        for it also as an MLflow image (key `<picture>`, step = epoch), which the UI's chart view shows
        for several runs side by side with a step slider (the ready view's image grid, ui_view).
        CheckpointRotation deletes a checkpoint only once an experiment snapshot has passed it, so
        it is still there."""
        run_id = self.record_of(trial).run_id
        fs, path, name = checkpoint.filesystem, checkpoint.path, self.spec.picture
        epoch = json.loads(_read(fs, f"{path}/{METRICS_FILE}"))["epoch"]
        try:
            data = _read(fs, f"{path}/{name}.png")
        except (FileNotFoundError, OSError):
            return
        with tempfile.TemporaryDirectory() as tmp:
            picture = Path(tmp) / f"epoch_{epoch:03d}.png"
            picture.write_bytes(data)
            self.client.log_artifact(run_id, str(picture), name)
        if self.spec.image_series:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                self.client.log_image(run_id, image, key=name, step=epoch, synchronous=True)

    def _note_retry(self, trial: TrialState) -> None:
        self.client.set_tag(self.record_of(trial).run_id, tags.RETRIES, str(trial.num_failures))

    def _close_unfinished(self, trials: list, was_interrupted: bool) -> None:
        """The runs still open at the sweep's end (Tune's loop has stopped: its trials hold still)."""
        for trial in trials:
            record = (self.records or {}).get(trial.trial_id)
            if record is not None and record.open:
                if was_interrupted:
                    self._record(record, INTERRUPTED_OUTCOME)
                else:
                    outcome = outcome_of(trial, self.spec.defaults["epochs"], budget_ran_out=True)
                    self._close(TrialState.of(trial), outcome)

    def _close(self, trial: TrialState, outcome: Outcome) -> None:
        record = self.record_of(trial)
        if outcome.keeps_models:
            model_logging.log_models(self.client, record.run_id, self.spec, trial.config, trial.checkpoint)
        self._record(record, outcome)

    def _record(self, record: TrialRecord, outcome: Outcome) -> None:
        record.open = False
        run_tags = [RunTag(tags.STATUS, outcome.status)]
        if outcome.reason:
            key = tags.ERROR if outcome.status == FAILED else tags.STOP_REASON
            run_tags.append(RunTag(key, outcome.reason))
        if outcome.status == STOPPED_EARLY:
            run_tags.append(RunTag(tags.STOPPED_EARLY, "true"))
        self.client.log_batch(record.run_id, tags=run_tags)
        self.client.set_terminated(record.run_id, outcome.run_status)
        record.status = outcome.run_status


def _placement_tags(record: TrialRecord, epoch: int, result: dict[str, Any]) -> list[RunTag]:
    """Tags for the node and GPUs of this result, when they differ from the last ones."""
    where = {"node_id": result.get(NODE_KEY), "gpus": result.get(GPUS_KEY, "")}
    history = record.placements
    if where["node_id"] is None or (history and {k: history[-1][k] for k in where} == where):
        return []
    history.append({"from_epoch": epoch, **where})
    return [RunTag(tags.NODE, where["node_id"]), RunTag(tags.GPUS, where["gpus"]),
            RunTag(tags.PLACEMENTS, json.dumps(history))]


def _read(fs, path: str) -> bytes:
    with fs.open_input_stream(path) as stream:
        return stream.read()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
