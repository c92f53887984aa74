"""Local stand-ins for a cluster's services: the tracking server (`mlflow/serve` with the local
PostgreSQL as backend and artifacts proxied to S3), and moto's S3 server on loopback for the tests
that store checkpoints or artifacts in S3 (AWS itself is the one thing faked).

A pytest plugin (conftest.py loads it): the session's `server` is shared by every module."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "mlflow" / "serve"
PG_ADMIN = os.environ.get("GANSWEEP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BUCKET = "gansweep-test"
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}
NO_AWS = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
          "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url} exited with {proc.returncode} before answering:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def clean_env(**extra: str) -> dict:
    """The environment without any AWS credentials or MLflow client settings of the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env.update(NO_AWS)
    env.update(extra)
    return env


class Server:
    """`mlflow/serve` in its own process group (uvicorn and its workers die together)."""

    def __init__(self, log: Path, port: int | None = None, **env: str):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = clean_env(MLFLOW_PYTHON=sys.executable, MLFLOW_HOST="127.0.0.1",
                             MLFLOW_PORT=str(self.port), MLFLOW_WORKERS="2", **env)
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        began = time.monotonic()
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen([str(SERVE)], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_http(f"{self.url}/health", self.proc, self.log)
        return time.monotonic() - began

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc:  # the workers of a killed supervisor may outlive it for a moment
            for _ in range(50):
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)


@pytest.fixture(scope="session")
def pg_database():
    psycopg2 = pytest.importorskip("psycopg2", reason="pip install psycopg2-binary (the test extra)")
    try:
        admin = psycopg2.connect(PG_ADMIN, connect_timeout=3)
    except psycopg2.OperationalError as error:
        pytest.skip(f"no PostgreSQL at {PG_ADMIN} (set GANSWEEP_TEST_PG): {error}")
    admin.autocommit = True
    name = f"gansweep_test_{secrets.token_hex(4)}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def server_env(pg_database, s3) -> dict:
    """What the head node's environment holds: the database, the bucket, credentials for S3."""
    return {"MLFLOW_BACKEND_STORE_URI": pg_database, "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{BUCKET}/mlflow",
            "MLFLOW_S3_ENDPOINT_URL": s3[0], **FAKE_AWS}


@pytest.fixture(scope="session")
def server(server_env, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("server") / "server.log", **server_env)
    srv.start()
    yield srv
    srv.kill(signal.SIGTERM)
