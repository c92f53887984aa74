"""The cluster tracking server, for real: `mlflow/serve` starts `mlflow server` on 127.0.0.1 with the
PostgreSQL backend (a fresh database per session) and artifacts proxied to S3 (moto's S3 server on
loopback). Concurrent writers, the S3 artifact path, and a server killed and restarted mid-sweep."""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from services import BUCKET, NO_AWS, PG_ADMIN, ROOT, SERVE, Server, clean_env

pytestmark = [pytest.mark.server, pytest.mark.slow]

KEYS = [f"m{k}" for k in range(10)]


@pytest.fixture(autouse=True)
def client_env(monkeypatch):
    """Clients (this process and the writers it forks) hold no AWS credentials at all."""
    for key in list(os.environ):
        if key.startswith("AWS_") or key in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
            monkeypatch.delenv(key)
    for key, value in NO_AWS.items():
        monkeypatch.setenv(key, value)


def value_of(index: int, epoch: int, k: int) -> float:
    return index * 1000 + epoch + k / 100


class RetryCounter(logging.Handler):
    """Counts urllib3's 'Retrying (Retry(...)) after connection broken by ...' warnings."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.refused = self.broken = 0

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Retrying"):
            if "NewConnectionError" in message:
                self.refused += 1  # the server is down: connect retries
            else:
                self.broken += 1  # a pooled or in-flight connection the kill cut


def writer(uri, experiment_id, index, epochs, pause, start, progress, results, workdir) -> None:
    """One trial: a run, `epochs` log_batch calls of len(KEYS) metrics, one artifact."""
    try:
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        retries = RetryCounter()
        logging.getLogger("urllib3.connectionpool").addHandler(retries)
        client = MlflowClient(uri)
        start.wait()
        began = time.monotonic()
        run_id = client.create_run(experiment_id, run_name=f"w{index:02d}").info.run_id
        slowest = 0.0
        for epoch in range(1, epochs + 1):
            stamp = int(time.time() * 1000)
            batch = [Metric(key, value_of(index, epoch, k), stamp, epoch) for k, key in enumerate(KEYS)]
            t0 = time.monotonic()
            client.log_batch(run_id, metrics=batch)
            slowest = max(slowest, time.monotonic() - t0)
            progress[index] = epoch
            time.sleep(pause)
        artifact = Path(workdir) / f"w{index:02d}.txt"
        artifact.write_text(f"writer {index} run {run_id}\n")
        client.log_artifact(run_id, str(artifact))
        client.set_terminated(run_id)
        counts = (retries.refused, retries.broken)
        results.put((index, run_id, time.monotonic() - began, slowest, counts, None))
    except BaseException:
        results.put((index, None, 0.0, 0.0, (0, 0), traceback.format_exc()))
        raise


def run_writers(uri, experiment_id, n, epochs, workdir, pause=0.0, during=None):
    """Fork n writers, release them together, optionally call during(progress) while they run."""
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Barrier(n + 1), ctx.Queue()
    progress = ctx.Array("i", n)
    procs = [ctx.Process(target=writer, args=(uri, experiment_id, i, epochs, pause, start, progress,
                                              results, str(workdir))) for i in range(n)]
    for proc in procs:
        proc.start()
    start.wait(timeout=60)
    began = time.monotonic()
    extra = during(progress) if during else None
    out = [results.get(timeout=300) for _ in procs]
    seconds = time.monotonic() - began
    for proc in procs:
        proc.join(timeout=60)
    errors = [error for *_, error in out if error]
    assert not errors, errors[0]
    assert [proc.exitcode for proc in procs] == [0] * n
    return sorted(out), seconds, extra


def verify(uri, experiment_id, runs, epochs, pg_uri, s3_client) -> dict:
    """Every point and artifact is there exactly once: through the API, in PostgreSQL, in the bucket."""
    import psycopg2
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = client.search_runs([experiment_id], max_results=1000)
    assert sorted(r.info.run_name for r in found) == [f"w{i:02d}" for i, *_ in runs]
    assert {r.info.status for r in found} == {"FINISHED"}
    points = artifacts = 0
    for index, run_id, *_ in runs:
        for k, key in enumerate(KEYS):
            history = client.get_metric_history(run_id, key)
            assert sorted(m.step for m in history) == list(range(1, epochs + 1)), (run_id, key)
            assert all(m.value == value_of(index, m.step, k) for m in history)
            points += len(history)
        listed = client.list_artifacts(run_id)
        assert [a.path for a in listed] == [f"w{index:02d}.txt"]
        assert client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")
        local = client.download_artifacts(run_id, listed[0].path)
        assert Path(local).read_text() == f"writer {index} run {run_id}\n"
        artifacts += len(listed)
    with psycopg2.connect(pg_uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM metrics m JOIN runs r ON m.run_uuid = r.run_uuid "
                    "WHERE r.experiment_id = %s", (int(experiment_id),))
        rows = cur.fetchone()[0]
    conn.close()
    listing = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=f"mlflow/{experiment_id}/")
    keys = [obj["Key"] for obj in listing.get("Contents", [])]
    assert sorted(key.rsplit("/", 1)[-1] for key in keys) == [f"w{i:02d}.txt" for i, *_ in runs]
    return {"points": points, "rows": rows, "artifacts": artifacts, "objects": len(keys)}


def test_sixteen_concurrent_writers(server, pg_database, s3, tmp_path):
    from mlflow import MlflowClient

    n, epochs = 16, 50
    experiment_id = MlflowClient(server.url).create_experiment(f"load-{secrets.token_hex(3)}")
    runs, seconds, _ = run_writers(server.url, experiment_id, n, epochs, tmp_path)
    found = verify(server.url, experiment_id, runs, epochs, pg_database, s3[1])
    written = n * epochs * len(KEYS)
    assert found["points"] == found["rows"] == written
    assert found["artifacts"] == found["objects"] == n
    per_writer = sorted(r[2] for r in runs)
    print(f"\n[tracking-server load] {n} writers x {epochs} epochs x {len(KEYS)} metrics "
          f"(one log_batch per epoch) + 1 artifact each, PostgreSQL backend, artifacts proxied to S3 "
          f"(moto), 2 uvicorn workers: points written {written}, found {found['points']} "
          f"(PostgreSQL rows {found['rows']}), artifacts {found['artifacts']}/{n} "
          f"(S3 objects {found['objects']}), {seconds:.1f} s wall "
          f"({written / seconds:.0f} points/s, {n * epochs / seconds:.0f} log_batch/s; "
          f"per writer {per_writer[0]:.1f}-{per_writer[-1]:.1f} s)")


def test_artifacts_go_through_the_proxy_to_s3(server, s3, tmp_path):
    """A client with no AWS credentials logs and reads an artifact; the object lands in the bucket."""
    import boto3
    from mlflow import MlflowClient

    assert boto3.Session().get_credentials() is None  # this client could not reach S3 by itself
    client = MlflowClient(server.url)
    experiment_id = client.create_experiment(f"s3-{secrets.token_hex(3)}")
    run_id = client.create_run(experiment_id).info.run_id
    assert client.get_run(run_id).info.artifact_uri == f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"
    payload = os.urandom(300_000)
    (tmp_path / "generator.pt").write_bytes(payload)
    client.log_artifact(run_id, str(tmp_path / "generator.pt"), artifact_path="model")
    assert [a.path for a in client.list_artifacts(run_id, "model")] == ["model/generator.pt"]
    back = client.download_artifacts(run_id, "model/generator.pt", str(tmp_path / "back"))
    assert Path(back).read_bytes() == payload
    key = f"mlflow/{experiment_id}/{run_id}/artifacts/model/generator.pt"
    assert s3[1].get_object(Bucket=BUCKET, Key=key)["Body"].read() == payload


def test_server_restart_mid_sweep(server_env, pg_database, s3, tmp_path, monkeypatch):
    """SIGKILL the whole server mid-sweep and start it again on the same port: MLflow's own HTTP
    retries (urllib3 Retry on connect errors, MLFLOW_HTTP_REQUEST_*) carry the writers through."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    # Defaults are 7 retries, backoff factor 2 (0, 4, 8, ... s, about 4 minutes in all); the
    # factor is an int, 1 is the shortest non-zero: waits of 0, 2, 4, 8, 16 s cover a restart.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.5")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    srv = Server(tmp_path / "server.log", **server_env)
    srv.start()
    n, epochs, pause = 4, 40, 0.05
    experiment_id = MlflowClient(srv.url).create_experiment(f"restart-{secrets.token_hex(3)}")
    timeline = {}

    def outage(progress):
        while min(progress) < 5:
            time.sleep(0.05)
        timeline["epochs_at_kill"] = list(progress)
        srv.kill()
        down = time.monotonic()
        # without retries, the same call fails at once
        with monkeypatch.context() as env, pytest.raises(MlflowException, match="Connection refused"):
            env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            MlflowClient(srv.url).get_experiment(experiment_id)
        time.sleep(2.0)
        timeline["restart_s"] = srv.start()
        timeline["outage_s"] = time.monotonic() - down

    try:
        runs, seconds, _ = run_writers(srv.url, experiment_id, n, epochs, tmp_path, pause, outage)
        found = verify(srv.url, experiment_id, runs, epochs, pg_database, s3[1])
    finally:
        srv.kill(signal.SIGTERM)
    assert max(timeline["epochs_at_kill"]) < epochs, "the writers finished before the server was killed"
    refused, broken = (sum(r[4][i] for r in runs) for i in (0, 1))
    slowest = max(r[3] for r in runs)
    assert refused > 0 and slowest > 2.0, (refused, broken, slowest)
    assert found["points"] == found["rows"] == n * epochs * len(KEYS)
    assert found["artifacts"] == found["objects"] == n
    print(f"\n[tracking-server restart] {n} writers x {epochs} epochs, server SIGKILLed at epochs "
          f"{timeline['epochs_at_kill']}, down {timeline['outage_s']:.1f} s "
          f"(restart {timeline['restart_s']:.1f} s): "
          f"urllib3 retries: {refused} on connection refused, {broken} on a broken connection; "
          f"slowest log_batch {slowest:.1f} s, points "
          f"{found['points']}/{n * epochs * len(KEYS)}, artifacts {found['artifacts']}/{n}, {seconds:.1f} s")


@dataclass
class AuthServer:
    server: Server
    password: str  # the admin's, as it is now (test_basic_auth_option changes it)
    state: Path  # where mlflow/serve wrote the auth app's configuration


@pytest.fixture(scope="module")
def auth_server(server_env, tmp_path_factory):
    """`mlflow/serve` with MLFLOW_AUTH=basic, its users in a database of their own."""
    pytest.importorskip("flask_wtf", reason="pip install 'mlflow[auth]' (the test extra)")
    import psycopg2

    auth_db, password = f"gansweep_auth_{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    folder = tmp_path_factory.mktemp("auth")
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{auth_db}"')
    srv = Server(folder / "server.log", **server_env, MLFLOW_AUTH="basic",
                 MLFLOW_AUTH_DATABASE_URI=PG_ADMIN.rsplit("/", 1)[0] + "/" + auth_db,
                 MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
                 MLFLOW_AUTH_ADMIN_PASSWORD=password,
                 MLFLOW_SERVER_STATE=str(folder / "state"))
    try:
        srv.start()
        yield AuthServer(srv, password, folder / "state")
    finally:
        srv.kill(signal.SIGTERM)
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{auth_db}" WITH (FORCE)')
        admin.close()


def test_basic_auth_option(auth_server, monkeypatch):
    """MLFLOW_AUTH=basic: anonymous requests are refused, the admin's credentials are accepted."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    srv = auth_server.server
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{srv.url}/api/2.0/mlflow/experiments/search?max_results=5", timeout=10)
    assert refused.value.code == 401
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(MlflowException, match="401|nauthorized|credentials"):
        MlflowClient(srv.url).search_experiments()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", auth_server.password)
    client = MlflowClient(srv.url)
    experiment_id = client.create_experiment(f"auth-{secrets.token_hex(3)}")
    assert client.get_experiment(experiment_id).name.startswith("auth-")
    # the admin changes the seeded password, as mlflow/README.md says
    from mlflow.server import get_app_client

    renewed = secrets.token_urlsafe(16)
    get_app_client("basic-auth", tracking_uri=srv.url).update_user_password(
        "admin", renewed, current_password=auth_server.password)
    auth_server.password = renewed
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", renewed)
    assert MlflowClient(srv.url).get_experiment(experiment_id).experiment_id == experiment_id
    assert oct((auth_server.state / "basic_auth.ini").stat().st_mode & 0o777) == "0o600"


def tiny_space(tmp_path: Path, tiny: dict, name: str) -> Path:
    """One trial of one epoch: what a command needs to find in the store."""
    from test_sweep import write_space

    return write_space(tmp_path, tiny, name=name, num_samples=1, sampler={"type": "random", "seed": 0},
                       scheduler={"type": "fifo"}, fixed={**tiny, "epochs": 1})


def test_a_sweep_needs_the_servers_credentials_before_it_starts(auth_server, tiny, ray_address, tmp_path,
                                                                monkeypatch, capsys):
    import ray
    from mlflow import MlflowClient

    from orchestrator.cli import main

    name = f"auth-sweep-{secrets.token_hex(3)}"
    url = auth_server.server.url
    args = ["sweep", str(tiny_space(tmp_path, tiny, name)), "--address", ray_address,
            "--storage", str(tmp_path / "sweeps"), "--tracking-uri", url]
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert main(args) == 2
    assert capsys.readouterr().err == (
        f"error: the tracking server {url} wants credentials: set MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD (a user its admin made, see mlflow/README.md)\n")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    assert main(args) == 2
    assert capsys.readouterr().err == (
        f"error: the tracking server {url} refused user 'admin' (MLFLOW_TRACKING_USERNAME, "
        "MLFLOW_TRACKING_PASSWORD) (401): check them, or ask its admin for a new password\n")
    assert not ray.is_initialized() and not (tmp_path / "sweeps").exists(), "nothing started"

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", auth_server.password)
    client = MlflowClient(url)
    assert client.get_experiment_by_name(name) is None, "nothing written"
    assert main(args) == 0
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert sorted(r.data.tags.get("gansweep.role", "trial") for r in runs) == ["sweep", "trial"]
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_every_command_with_only_tracking_uri(server, tiny, ray_address, tmp_path, monkeypatch, capsys):
    """sweep, report, promote, promote --rollback and generate, each given only --tracking-uri (no
    MLFLOW_TRACKING_URI), run in an empty folder: each works, and none falls back to ./mlflow.db."""
    import mlflow
    from mlflow import MlflowClient
    from PIL import Image

    from orchestrator.cli import main

    monkeypatch.chdir(tmp_path)
    in_repo = (ROOT / "mlflow.db").exists()
    name = f"commands-{secrets.token_hex(3)}"
    model = f"{name}-generator"

    def command(*args: str) -> int:
        # Each command is a new process for its user: the sweep sets the process-wide URI (for
        # MLflow's log_model), earlier tests may have too.
        mlflow.set_tracking_uri(None)
        return main([*args, "--tracking-uri", server.url])

    assert command("sweep", str(tiny_space(tmp_path, tiny, name)), "--address", ray_address) == 0
    assert f"promote {name} --tracking-uri {server.url}\n" in capsys.readouterr().out
    assert command("report", name) == 0
    assert "t001" in capsys.readouterr().out
    assert command("promote", name) == 0
    assert (f"generate models:/{model}@champion --out grid.png --tracking-uri {server.url}\n"
            in capsys.readouterr().out)
    assert command("promote", name, "--force") == 0
    assert command("promote", name, "--rollback") == 0
    client = MlflowClient(server.url)
    assert client.get_model_version_by_alias(model, "champion").version == "1"
    assert client.get_model_version_by_alias(model, "previous").version == "2"
    assert client.get_model_version_download_uri(model, "1").startswith("mlflow-artifacts:")
    assert command("generate", f"models:/{model}@champion", "--n", "16", "--out", "grid.png") == 0
    assert Image.open(tmp_path / "grid.png").size == (4 * 30 + 2, 4 * 30 + 2)  # 4x4 of 28 px, 2 px padding
    assert not (tmp_path / "mlflow.db").exists()
    assert (ROOT / "mlflow.db").exists() == in_repo


@pytest.mark.parametrize("env, message", [
    ({}, "MLFLOW_BACKEND_STORE_URI is not set"),
    ({"MLFLOW_BACKEND_STORE_URI": "sqlite:///mlflow.db"}, "must be a postgresql:// URI"),
    ({"MLFLOW_BACKEND_STORE_URI": "postgresql://u@h/db"}, "MLFLOW_ARTIFACTS_DESTINATION is not set"),
    ({"MLFLOW_BACKEND_STORE_URI": "postgresql://u@h/db", "MLFLOW_ARTIFACTS_DESTINATION": "s3://b/p",
      "MLFLOW_HOST": "127.0.0.1", "MLFLOW_AUTH": "ldap"}, "MLFLOW_AUTH must be"),
])
def test_serve_refuses_bad_configuration(env, message):
    done = subprocess.run([str(SERVE)], env=clean_env(MLFLOW_PYTHON=sys.executable, **env),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr
