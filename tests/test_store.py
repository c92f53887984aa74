"""The tracking store every command opens: checked before a sweep starts (creating nothing),
created once under a lock, artifacts kept beside it; commands that only read never create it."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.errors import LookupProblem, UsageError
from orchestrator.tracking import mlflow_store
from orchestrator.tracking.parent_run import experiment_id


def open_and_create(uri: str, name: str) -> str:
    client = mlflow_store.connect(uri)
    return experiment_id(client, uri, name)


def test_sweeps_started_at_once_in_a_new_folder_share_one_store(tmp_path):
    # Each process creates (or finds) the store and its own experiment at the same moment, as two
    # `sweep` commands started together do; without the lock MLflow's migrations collide.
    uri = f"sqlite:///{tmp_path}/new/mlflow.db"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        ids = pool.starmap(open_and_create, [(uri, f"space-{i}") for i in range(3)])
    assert len(set(ids)) == 3
    names = {e.name for e in MlflowClient(uri).search_experiments()}
    assert {"space-0", "space-1", "space-2"} <= names
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["mlflow.db"], "no lock file beside it"


def test_a_local_stores_artifacts_live_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    uri = f"sqlite:///{tmp_path}/elsewhere/mlflow.db"
    client = mlflow_store.connect(uri)
    experiment = experiment_id(client, uri, "dcgan mnist/v2")
    run = client.create_run(experiment)
    client.log_text(run.info.run_id, "hello", "note.txt")
    assert (tmp_path / "elsewhere" / "mlruns" / "dcgan_mnist_v2").is_dir()
    assert list((tmp_path / "elsewhere" / "mlruns").rglob("note.txt"))
    assert not Path(tmp_path / "mlruns").exists(), "nothing in the working folder"


def test_the_check_before_a_sweep_creates_nothing(tmp_path):
    mlflow_store.check(f"sqlite:///{tmp_path}/new/folder/mlflow.db")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "a-file").write_text("")
    with pytest.raises(UsageError, match=f"{tmp_path}/a-file is not a writable folder"):
        mlflow_store.check(f"sqlite:///{tmp_path}/a-file/mlflow.db")


def test_a_reader_does_not_create_the_store(tmp_path):
    with pytest.raises(LookupProblem, match="run a sweep first"):
        mlflow_store.connect(f"sqlite:///{tmp_path}/new/mlflow.db", create=False)
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_server_is_named(tmp_path):
    with pytest.raises(LookupProblem, match="the tracking server http://127.0.0.1:9 does not answer"):
        mlflow_store.check("http://127.0.0.1:9")


def test_a_new_store_is_made_without_mlflows_log_lines(tmp_path):
    """A first sweep's console is gansweep's own: no 'Creating initial MLflow database tables'."""
    import subprocess
    import sys

    code = f"from orchestrator.tracking import mlflow_store; mlflow_store.connect('sqlite:///{tmp_path}/m.db')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m.db").exists()
    assert done.stdout + done.stderr == ""
