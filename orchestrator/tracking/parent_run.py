"""A sweep's parent run: its experiment, created by the driver before any trial, and the run that
records what the sweep ran and where its state lives (what --resume reads back)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from orchestrator.space.search_space import SearchSpace
from orchestrator.tracking import mlflow_store, tags, ui_view


def experiment_id(client: MlflowClient, tracking_uri: str, name: str) -> str:
    """The experiment of a space, created here on the driver before any trial starts."""
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    location = mlflow_store.artifact_location(tracking_uri, name)
    return client.create_experiment(name, artifact_location=location)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def start(client: MlflowClient, experiment: str, space: SearchSpace, storage: str,
          tune_name: str, source_tags: dict[str, str], prepared: dict[str, str]) -> str:
    """The sweep's run: what it ran (the file, and the space as it ran: with --set and CLI overrides),
    where its state lives, the models it started from, and what was prepared for it (the evaluator
    networks it staged, the sweeps it learned from with --warm-start); and the sweep's ready view in
    MLflow's UI."""
    scheduler = space.scheduler.type
    sampler = "tune (pbt)" if scheduler == "pbt" else space.sampler.type
    run = client.create_run(experiment, run_name=f"sweep {tune_name}", tags={
        tags.ROLE: "sweep", tags.SPACE_FILE: str(space.path), tags.SPACE_HASH: space.content_hash,
        tags.GIT_COMMIT: git_commit(), tags.SAMPLER: sampler,
        tags.SCHEDULER: scheduler, tags.STORAGE: storage, tags.TUNE_NAME: tune_name,
        tags.TRAINER: space.trainer, tags.METRIC: space.primary_metric,
        tags.MODE: space.primary_mode, tags.OVERRIDES: json.dumps(space.overrides), **source_tags,
        **prepared,
    })
    client.log_artifact(run.info.run_id, str(space.path))
    effective = {**space.document, "num_samples": space.num_samples, "max_concurrent": space.max_concurrent}
    client.log_text(run.info.run_id, yaml.safe_dump(effective, sort_keys=False), "effective_space.yaml")
    ui_view.write(client, experiment, space, run.info.run_id, run.info.run_name)  # the link printed last
    return run.info.run_id
