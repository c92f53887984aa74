"""MLflow bookkeeping of a sweep, done on the driver: one parent run, one child run per trial.

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
import logging
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch
import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from PIL import Image
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

import trainers
from orchestrator import store, tags, ui_view
from orchestrator.outcome import (
    FAILED,
    INTERRUPTED_OUTCOME,
    LOST_OUTCOME,
    STOPPED_EARLY,
    Outcome,
    outcome_of,
)
from orchestrator.progress import interrupted
from orchestrator.record_queue import RecordError, RecordQueue
from orchestrator.space import SearchSpace
from orchestrator.trial import GPUS_KEY, METRICS_FILE, NODE_KEY
from trainers import catalog
from trainers import checkpoint as checkpoints

# Models are saved pickled (not 'pt2'): conditional generators take (noise, labels) and
# `generate` needs the nn.Module with its attributes. They are our own models, in our own store.
logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)

NOT_LOGGED = set(AUTO_RESULT_KEYS) | {"done", "trial_id", "iterations_since_restore", "diverged"}
SERVER_LANES = 8  # writer threads for a tracking server (benchmarks/bookkeeping.py measures 1 against 8)
BATCH_METRICS = 900  # MLflow's log_batch takes at most 1000 metrics, params and tags together


def experiment_id(client: MlflowClient, tracking_uri: str, name: str) -> str:
    """The experiment of a space, created here on the driver before any trial starts."""
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=store.artifact_location(tracking_uri, name))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def start_parent(client: MlflowClient, experiment: str, space: SearchSpace, storage: str,
                 tune_name: str, source_tags: dict[str, str], learned_from: dict[str, str]) -> str:
    """The sweep's run: what it ran (the file, and the space as it ran: with --set and CLI overrides),
    where its state lives, the models it started from and the sweeps it learned from (--warm-start);
    and the sweep's ready view in MLflow's UI."""
    scheduler = space.scheduler.type
    sampler = "tune (pbt)" if scheduler == "pbt" else space.sampler.type
    run = client.create_run(experiment, run_name=f"sweep {tune_name}", tags={
        tags.ROLE: "sweep", tags.SPACE_FILE: str(space.path), tags.SPACE_HASH: space.content_hash,
        tags.GIT_COMMIT: git_commit(), tags.SAMPLER: sampler,
        tags.SCHEDULER: scheduler, tags.STORAGE: storage, tags.TUNE_NAME: tune_name,
        tags.TRAINER: space.trainer, tags.METRIC: space.primary_metric,
        tags.MODE: space.primary_mode, tags.OVERRIDES: json.dumps(space.overrides), **source_tags,
        **learned_from,
    })
    client.log_artifact(run.info.run_id, str(space.path))
    effective = {**space.document, "num_samples": space.num_samples, "max_concurrent": space.max_concurrent}
    client.log_text(run.info.run_id, yaml.safe_dump(effective, sort_keys=False), "effective_space.yaml")
    ui_view.write(client, experiment, space, run.info.run_id, run.info.run_name)  # the link printed last
    return run.info.run_id


def latest_parent(client: MlflowClient, experiment: str):
    """The newest sweep of an experiment (what --resume continues), or None."""
    runs = client.search_runs([experiment], filter_string=f"tags.`{tags.ROLE}` = 'sweep'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


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


class TrackingCallback(tune.Callback):
    """Pickled by Tune with the experiment (and unpickled by --resume): holds only names and ids,
    and reconnects to the tracking server when it is set up again.

    Tune's loop only copies what an event says and queues the writes: each trial's go to one lane
    (a `RecordQueue`: one writer thread, in order), so a run's record keeps its order. The lanes
    are drained before each of Tune's experiment snapshots (`get_state`), so a snapshot never knows
    a result that the record lacks: a driver killed with writes still queued loses only results
    that --resume has Tune report again. They are drained at the end (`on_experiment_end`, also
    after an error or Ctrl-C). A write that fails (after MLflow's own HTTP retries) stops its lane
    and fails the sweep at Tune's next event for that lane, or at the end, as a failed write in
    the loop did before.
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
        # Requests to a server mostly wait (on the network, on its database): several lanes overlap
        # them. A local SQLite store takes one writer at a time.
        lanes = SERVER_LANES if store.is_server(self.tracking_uri) else 1
        self.lanes = [RecordQueue(f"tracking lane {i + 1}") for i in range(lanes)]
        self.lane_of: dict[str, RecordQueue] = {}  # trial id -> its lane (Tune's loop only)
        self.reading = threading.Lock()  # the record is read once, by the first lane that needs it
        # written and read by the lanes' writer threads only (each trial's run by its own lane)
        self.client = MlflowClient(self.tracking_uri)
        self.runs: dict[str, str] | None = None  # trial id -> run id (None: the record not read yet)
        self.statuses: dict[str, str] = {}  # trial id -> its run's status when the record was read
        self.logged_epoch: dict[str, int] = {}  # run id -> last epoch logged
        self.configs: dict[str, dict[str, str]] = {}  # run id -> config as last noted (PBT changes it)
        self.open_runs: set[str] = set()  # started and not yet closed
        self.new_runs: set[str] = set()  # created and not yet started
        self.placements: dict[str, list[dict[str, Any]]] = {}  # run id -> where its epochs ran

    def __getstate__(self) -> dict[str, Any]:
        keep = ("tracking_uri", "experiment", "parent", "space", "run_tags")
        return {k: v for k, v in self.__dict__.items() if k in keep}

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
            lane.submit(self._close_unfinished, mine, interrupted.is_set())
        failures = []
        for lane in self.lanes:
            try:
                lane.close()
            except RecordError as failure:
                failures.append(failure)
        if failures:
            raise failures[0]

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

    # -- runs (the writer thread) ----------------------------------------------------------------
    def run_of(self, trial: TrialState) -> str:
        self._read_record()
        if trial.trial_id not in self.runs:
            self.runs[trial.trial_id] = self._create(trial)
        return self.runs[trial.trial_id]

    def _read_record(self) -> None:
        """The runs this sweep has (after --resume or a retry: found again by their trial id tag),
        read once: from then on the lanes know every run it has, and what each logged."""
        with self.reading:
            if self.runs is None:
                self.runs = self._runs_in_store()

    def _runs_in_store(self) -> dict[str, str]:
        runs, token = {}, None
        while True:
            page = self.client.search_runs(
                [self.experiment], filter_string=f"tags.`mlflow.parentRunId` = '{self.parent}'",
                max_results=1000, page_token=token)
            for run in page:
                run_id, trial_id = run.info.run_id, run.data.tags.get(tags.TRIAL_ID)
                if trial_id is None or trial_id in runs:
                    continue  # newest first: the newest run of a trial is its run
                runs[trial_id], self.statuses[trial_id] = run_id, run.info.status
                self.logged_epoch[run_id] = int(run.data.metrics.get("epoch", 0))
                self.placements[run_id] = json.loads(run.data.tags.get(tags.PLACEMENTS, "[]"))
            token = page.token
            if not token:
                return runs

    def _create(self, trial: TrialState) -> str:
        config, name = trial.config, self.space.run_name(trial.label, trial.config)
        run = self.client.create_run(self.experiment, run_name=name, tags={
            "mlflow.parentRunId": self.parent, tags.TRIAL_ID: trial.trial_id, tags.STATUS: "running",
            tags.TRAINER: self.space.trainer, **self.run_tags,
        })
        params = [Param(k, str(v)[:6000]) for k, v in sorted(config.items())]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run.info.run_id, params=params[start:start + 100])
        self.client.log_text(run.info.run_id, yaml.safe_dump(config, sort_keys=True), "config.yaml")
        self.configs[run.info.run_id] = {param.key: param.value for param in params}
        self.new_runs.add(run.info.run_id)
        return run.info.run_id

    # -- writes (the writer thread) --------------------------------------------------------------
    def _close_lost(self, known: set[str]) -> None:
        """After --resume: close the runs of trials that Tune never saved before the driver died.

        Tune snapshots its state every few seconds; a trial started just before a kill has an
        MLflow run but is unknown to the restored Tune, which samples a replacement instead.
        """
        self._read_record()
        for trial_id, status in self.statuses.items():
            if trial_id not in known and status == "RUNNING":
                self._record(self.runs[trial_id], LOST_OUTCOME)

    def _start(self, trial: TrialState) -> None:
        run_id = self.run_of(trial)
        if run_id in self.new_runs:  # created just now: running, with its config as params
            self.new_runs.discard(run_id)
        else:  # a retry, a PBT restart, or a run of the sweep before --resume
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, tags.STATUS, "running")
            self._note_new_config(run_id, trial)
        self.open_runs.add(run_id)

    def _note_new_config(self, run_id: str, trial: TrialState) -> None:
        """PBT restarts a trial with mutated hyperparameters; params are immutable, so tag them."""
        if run_id not in self.configs:
            self.configs[run_id] = dict(self.client.get_run(run_id).data.params)
        known = self.configs[run_id]
        changed = {k: str(v)[:6000] for k, v in trial.config.items()
                   if k in known and str(v)[:6000] != known[k]}
        since = self.logged_epoch.get(run_id, 0) + 1
        if changed and since <= trial.config.get("epochs", self.spec.defaults["epochs"]):
            self.client.set_tag(run_id, tags.config_from_epoch(since), json.dumps(changed))
            known.update(changed)

    def _log_results(self, results: list[tuple[TrialState, dict[str, Any]]]) -> None:
        """One trial's results in the order Tune gave them, in as few log_batch calls as MLflow allows."""
        run_id = self.run_of(results[0][0])
        metrics: list[Metric] = []
        run_tags: dict[str, RunTag] = {}  # key -> its newest value
        for _, result in results:
            epoch = int(result.get("epoch", 0))
            if epoch <= self.logged_epoch.get(run_id, 0):
                continue  # already logged before a retry or a driver restart
            now = int(time.time() * 1000)
            metrics += [Metric(k, float(v), now, epoch) for k, v in result.items()
                        if k not in NOT_LOGGED and _is_number(v)]
            for tag in self._placement_tags(run_id, epoch, result):
                run_tags[tag.key] = tag
            if result.get("diverged"):
                run_tags[tags.STOP_REASON] = RunTag(tags.STOP_REASON, result["stop_reason"])
            self.logged_epoch[run_id] = epoch
        for start in range(0, len(metrics), BATCH_METRICS):
            self.client.log_batch(run_id, metrics=metrics[start:start + BATCH_METRICS],
                                  tags=list(run_tags.values()) if start == 0 else [])
        if run_tags and not metrics:
            self.client.log_batch(run_id, tags=list(run_tags.values()))

    def _placement_tags(self, run_id: str, epoch: int, result: dict[str, Any]) -> list[RunTag]:
        """Tags for the node and GPUs of this result, when they differ from the last ones."""
        where = {"node_id": result.get(NODE_KEY), "gpus": result.get(GPUS_KEY, "")}
        history = self.placements.setdefault(run_id, [])
        if where["node_id"] is None or (history and {k: history[-1][k] for k in where} == where):
            return []
        history.append({"from_epoch": epoch, **where})
        return [RunTag(tags.NODE, where["node_id"]), RunTag(tags.GPUS, where["gpus"]),
                RunTag(tags.PLACEMENTS, json.dumps(history))]

    def _log_pictures(self, trial: TrialState, checkpoint) -> None:
        """Each epoch's sample grid (or confusion matrix), read from the checkpoint in the sweep's storage.

        As a file, `samples/epoch_NNN.png` (a stable path: the registry's description names the
        champion's last one, and a user downloads it as it is), and the sample grid also as an
        MLflow image (key `samples`, step = epoch), which the UI's chart view shows for several runs
        side by side with a step slider (the ready view's image grid, ui_view). CheckpointRotation
        deletes a checkpoint only once an experiment snapshot has passed it, so it is still there."""
        run_id = self.run_of(trial)
        fs, path = checkpoint.filesystem, checkpoint.path
        epoch = json.loads(_read(fs, f"{path}/{METRICS_FILE}"))["epoch"]
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("samples", "confusion_matrix"):
                try:
                    data = _read(fs, f"{path}/{name}.png")
                except (FileNotFoundError, OSError):
                    continue
                picture = Path(tmp) / f"epoch_{epoch:03d}.png"
                picture.write_bytes(data)
                self.client.log_artifact(run_id, str(picture), name)
                if name == ui_view.SAMPLES:
                    with Image.open(io.BytesIO(data)) as image:
                        image.load()
                        self.client.log_image(run_id, image, key=name, step=epoch, synchronous=True)

    def _note_retry(self, trial: TrialState) -> None:
        self.client.set_tag(self.run_of(trial), tags.RETRIES, str(trial.num_failures))

    def _close_unfinished(self, trials: list, was_interrupted: bool) -> None:
        """The runs still open at the sweep's end (Tune's loop has stopped: its trials hold still)."""
        for trial in trials:
            run_id = (self.runs or {}).get(trial.trial_id)
            if run_id in self.open_runs:
                if was_interrupted:
                    self._record(run_id, INTERRUPTED_OUTCOME)
                else:
                    outcome = outcome_of(trial, self.spec.defaults["epochs"], budget_ran_out=True)
                    self._close(TrialState.of(trial), outcome)

    def _close(self, trial: TrialState, outcome: Outcome) -> None:
        run_id = self.run_of(trial)
        if outcome.keeps_models:
            self._log_models(run_id, trial)
        self._record(run_id, outcome)

    def _record(self, run_id: str, outcome: Outcome) -> None:
        self.open_runs.discard(run_id)
        run_tags = [RunTag(tags.STATUS, outcome.status)]
        if outcome.reason:
            key = tags.ERROR if outcome.status == FAILED else tags.STOP_REASON
            run_tags.append(RunTag(key, outcome.reason))
        if outcome.status == STOPPED_EARLY:
            run_tags.append(RunTag(tags.STOPPED_EARLY, "true"))
        self.client.log_batch(run_id, tags=run_tags)
        self.client.set_terminated(run_id, outcome.run_status)

    def _log_models(self, run_id: str, trial: TrialState) -> None:
        """The trial's last weights as MLflow PyTorch models (generator, discriminator, ...).

        A failure here is tagged on the run and printed, but never fails the trial or the sweep.
        """
        if trial.checkpoint is None:
            return
        try:
            self._export(run_id, trial)
        except Exception as err:  # noqa: BLE001 - the metrics and samples are still worth keeping
            self.client.set_tag(run_id, tags.MODEL_ERROR, repr(err)[-5000:])
            print(f"warning: could not log the models of run {run_id}: {err!r}", file=sys.stderr)

    def _export(self, run_id: str, trial: TrialState) -> None:
        with trial.checkpoint.as_directory() as directory:
            state = checkpoints.load(directory)["task"]
        models = self.spec.export(dict(trial.config), state)
        code = str(Path(trainers.__file__).parent)  # the models load where gansweep is not installed
        # Given, not inferred: inference imports the model in a subprocess, seconds per model.
        requirements = [f"torch=={torch.__version__.split('+')[0]}"]
        with mlflow.start_run(run_id=run_id):
            for name, model in models.items():
                mlflow.pytorch.log_model(model, name=name, code_paths=[code], signature=_signature(model),
                                         serialization_format="pickle", pip_requirements=requirements)


def _signature(model):
    """noise -> images for an unconditional generator, images -> scores for a discriminator."""
    from mlflow.models import infer_signature

    if getattr(model, "num_classes", 0):
        return None  # a conditional model takes (input, labels): no single-tensor signature
    example = (torch.randn(2, model.noise_dim) if hasattr(model, "noise_dim")
               else torch.zeros(2, *model.image_shape))
    with torch.no_grad():
        return infer_signature(example.numpy(), model(example).numpy())


def _read(fs, path: str) -> bytes:
    with fs.open_input_stream(path) as stream:
        return stream.read()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
