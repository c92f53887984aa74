"""mlflow/backup and mlflow/restore for real: the local PostgreSQL (fresh databases, dropped at the
end), pg_dump/pg_restore/psql of this machine, moto's S3 server. A database filled through MLflow's
own SQLAlchemy stores is backed up, restored into an empty database, and read back through MLflow:
what a `ray down` + `ray up` of the head must bring back."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from services import BUCKET, FAKE_AWS, clean_env

pytestmark = [pytest.mark.server, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BACKUP = ROOT / "mlflow" / "backup"
RESTORE = ROOT / "mlflow" / "restore"
PG_ADMIN = os.environ.get("GANSWEEP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MODEL = "gansweep-dcgan"


def run(script: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(script), *args], env=clean_env(**env), capture_output=True,
                          text=True, timeout=120)
    print(f"$ {script.name} {' '.join(args)} -> {done.returncode}\n{done.stdout}{done.stderr}")
    return done


def sql(uri: str, query: str, args=()) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(uri)
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.commit()
        conn.close()


def dumps_under(s3_client, prefix: str) -> list[str]:
    listing = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"][len(prefix):] for obj in listing.get("Contents", []))


def latest(s3_client, prefix: str) -> str:
    return s3_client.get_object(Bucket=BUCKET, Key=prefix + "latest")["Body"].read().decode().strip()


@pytest.fixture(scope="module")
def databases():
    """create() -> the URI of a new empty database; every one is dropped at the end."""
    psycopg2 = pytest.importorskip("psycopg2", reason="pip install psycopg2-binary (the test extra)")
    for tool in ("pg_dump", "pg_restore", "psql"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (apt-get install postgresql-client)")
    try:
        admin = psycopg2.connect(PG_ADMIN, connect_timeout=3)
    except psycopg2.OperationalError as error:
        pytest.skip(f"no PostgreSQL at {PG_ADMIN} (set GANSWEEP_TEST_PG): {error}")
    admin.autocommit = True
    made = []

    def create() -> str:
        name = f"gansweep_backup_{secrets.token_hex(4)}"
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return PG_ADMIN.rsplit("/", 1)[0] + "/" + name

    yield create
    with admin.cursor() as cur:
        for name in made:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def sa(uri: str) -> str:
    return uri.replace("postgresql://", "postgresql+psycopg2://", 1)


@pytest.fixture(scope="module")
def source(databases) -> dict:
    """A tracking database as a sweep leaves it: an experiment, runs with params, tags and metric
    histories, a registered model with a version (from a run) and an alias."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    uri = databases()
    client = MlflowClient(tracking_uri=sa(uri), registry_uri=sa(uri))
    name = f"dcgan-mnist-{secrets.token_hex(3)}"
    experiment_id = client.create_experiment(name, artifact_location=f"s3://{BUCKET}/mlflow/x")
    runs = {}
    for index in range(3):
        run_id = client.create_run(experiment_id, run_name=f"trial-{index}").info.run_id
        fid = [100.0 - 10 * index - step for step in range(5)]
        metrics = [Metric("fid", v, 1_700_000_000_000 + s, s) for s, v in enumerate(fid)]
        client.log_batch(run_id, metrics=metrics,
                         params=[Param("lr", str(10 ** -(index + 3)))], tags=[RunTag("node", f"gpu-{index}")])
        client.set_terminated(run_id)
        runs[f"trial-{index}"] = {"run_id": run_id, "fid": fid, "lr": str(10 ** -(index + 3))}
    client.create_registered_model(MODEL, description="best generator")
    version = client.create_model_version(MODEL, f"s3://{BUCKET}/mlflow/x/{runs['trial-2']['run_id']}/model",
                                          run_id=runs["trial-2"]["run_id"])
    client.set_registered_model_alias(MODEL, "champion", version.version)
    return {"uri": uri, "experiment": name, "runs": runs, "version": version.version}


@pytest.fixture(scope="module")
def head_env(s3) -> dict:
    """What the units on the head hold: the bucket (a prefix of this module's own), S3 credentials."""
    return {"MLFLOW_ARTIFACTS_DESTINATION": f"s3://{BUCKET}/{secrets.token_hex(4)}/mlflow",
            "MLFLOW_S3_ENDPOINT_URL": s3[0], "MLFLOW_PYTHON": sys.executable, **FAKE_AWS}


@pytest.fixture(scope="module")
def backed_up(source, head_env, s3) -> dict:
    done = run(BACKUP, MLFLOW_BACKEND_STORE_URI=source["uri"], **head_env)
    assert done.returncode == 0, done.stderr
    prefix = head_env["MLFLOW_ARTIFACTS_DESTINATION"][len(f"s3://{BUCKET}/"):] + "/backups/"
    names = [n for n in dumps_under(s3[1], prefix) if n != "latest"]
    assert len(names) == 1 and names[0].startswith("mlflow-") and names[0].endswith("Z.dump"), names
    assert latest(s3[1], prefix) == names[0]
    assert names[0] in done.stdout and "3 runs" in done.stdout and "1 registered models" in done.stdout
    return {"prefix": prefix, "name": names[0]}


def test_backup_then_restore_into_an_empty_database_brings_every_run_back(source, backed_up, databases,
                                                                          head_env, s3):
    from mlflow import MlflowClient

    target = databases()
    env = {k: v for k, v in head_env.items() if k != "MLFLOW_S3_ENDPOINT_URL"}
    # AWS_ENDPOINT_URL (boto3's own variable) works as well as MLFLOW_S3_ENDPOINT_URL
    done = run(RESTORE, MLFLOW_BACKEND_STORE_URI=target, AWS_ENDPOINT_URL=s3[0], **env)
    assert done.returncode == 0, done.stderr
    assert backed_up["name"] in done.stdout and "taken " in done.stdout
    assert "1 experiments" not in done.stdout  # the Default experiment is there too
    assert "3 runs" in done.stdout and "1 registered models" in done.stdout

    client = MlflowClient(tracking_uri=sa(target), registry_uri=sa(target))
    experiment = client.get_experiment_by_name(source["experiment"])
    assert experiment is not None
    found = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(found) == sorted(source["runs"])
    for name, expected in source["runs"].items():
        run_ = found[name]
        assert run_.info.run_id == expected["run_id"] and run_.info.status == "FINISHED"
        assert run_.data.params == {"lr": expected["lr"]}
        assert run_.data.tags["node"] == f"gpu-{name[-1]}"
        history = sorted(client.get_metric_history(run_.info.run_id, "fid"), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == list(enumerate(expected["fid"]))
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert version.version == source["version"]
    assert version.run_id == source["runs"]["trial-2"]["run_id"]
    assert client.get_registered_model(MODEL).description == "best generator"


def test_restore_never_overwrites_a_database_with_mlflow_tables(source, backed_up, head_env):
    before = sql(source["uri"], "SELECT count(*) FROM metrics")
    done = run(RESTORE, MLFLOW_BACKEND_STORE_URI=source["uri"], **head_env)
    assert done.returncode == 1 and "already holds MLflow tables" in done.stderr and "--force" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    skipped = run(RESTORE, "--if-empty", MLFLOW_BACKEND_STORE_URI=source["uri"], **head_env)
    assert skipped.returncode == 0 and "nothing restored" in skipped.stdout and "3 runs" in skipped.stdout
    assert sql(source["uri"], "SELECT count(*) FROM metrics") == before


def test_force_replaces_the_database_once_nobody_is_connected(backed_up, databases, head_env):
    import psycopg2

    target = databases()
    assert run(RESTORE, "--if-empty", MLFLOW_BACKEND_STORE_URI=target, **head_env).returncode == 0
    points = sql(target, "SELECT count(*) FROM metrics")[0][0]
    assert points == 15
    sql(target, "DELETE FROM metrics")  # what the backup should bring back
    sql(target, "CREATE TABLE unrelated (x int)")  # and what it should sweep away
    server = psycopg2.connect(target)  # a client still connected, as the tracking server would be
    try:
        busy = run(RESTORE, "--force", backed_up["name"], MLFLOW_BACKEND_STORE_URI=target, **head_env)
        assert busy.returncode == 1 and "other session" in busy.stderr and "gansweep-mlflow" in busy.stderr
    finally:
        server.close()
    assert sql(target, "SELECT count(*) FROM metrics")[0][0] == 0
    done = run(RESTORE, "--force", backed_up["name"], MLFLOW_BACKEND_STORE_URI=target, **head_env)
    assert done.returncode == 0 and "replacing" in done.stdout, done.stderr
    assert sql(target, "SELECT count(*) FROM metrics")[0][0] == points
    assert sql(target, "SELECT to_regclass('public.unrelated')") == [(None,)]


def test_restore_from_a_local_file_needs_no_s3(backed_up, databases, s3, tmp_path):
    """A dump copied to another machine (aws s3 cp) restores there without any S3 settings."""
    local = tmp_path / backed_up["name"]
    s3[1].download_file(BUCKET, backed_up["prefix"] + backed_up["name"], str(local))
    target = databases()
    done = run(RESTORE, str(local), MLFLOW_BACKEND_STORE_URI=sa(target))
    assert done.returncode == 0 and str(local) in done.stdout and "3 runs" in done.stdout, done.stderr
    assert sql(target, "SELECT count(*) FROM metrics") == [(15,)]


def test_restore_with_no_backup_yet_says_so(databases, s3):
    target = databases()
    done = run(RESTORE, "--if-empty", MLFLOW_BACKEND_STORE_URI=target,
               MLFLOW_BACKUP_DESTINATION=f"s3://{BUCKET}/{secrets.token_hex(4)}/backups",
               MLFLOW_S3_ENDPOINT_URL=s3[0], **FAKE_AWS)
    assert done.returncode == 0 and "no backup under" in done.stdout, done.stderr
    tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
    assert sql(target, tables) == [(0,)]


def test_backup_to_a_missing_bucket_exits_2_and_uploads_nothing(source, backed_up, head_env, s3):
    before = dumps_under(s3[1], backed_up["prefix"])
    env = {**head_env, "MLFLOW_BACKUP_DESTINATION": "s3://gansweep-no-such-bucket/mlflow/backups"}
    done = run(BACKUP, MLFLOW_BACKEND_STORE_URI=source["uri"], **env)
    assert done.returncode == 2 and "'gansweep-no-such-bucket' does not exist" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "gansweep-no-such-bucket" not in [b["Name"] for b in s3[1].list_buckets()["Buckets"]]
    assert dumps_under(s3[1], backed_up["prefix"]) == before


def test_a_failed_dump_is_never_uploaded(source, backed_up, head_env, s3, tmp_path):
    """pg_dump fails mid-way (it cannot lock a table within MLFLOW_BACKUP_LOCK_TIMEOUT): no object,
    `latest` unchanged, no partial file left behind."""
    import psycopg2

    before, pointer = dumps_under(s3[1], backed_up["prefix"]), latest(s3[1], backed_up["prefix"])
    locker = psycopg2.connect(source["uri"])
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")  # held until the rollback below
        done = run(BACKUP, MLFLOW_BACKEND_STORE_URI=source["uri"], MLFLOW_BACKUP_LOCK_TIMEOUT="1s",
                   MLFLOW_BACKUP_TMPDIR=str(tmp_path), **head_env)
    finally:
        locker.rollback()
        locker.close()
    assert done.returncode == 1 and "pg_dump failed" in done.stderr, done.stderr
    assert "MLFLOW_BACKUP_LOCK_TIMEOUT=1s" in done.stderr and "nothing was uploaded" in done.stderr
    assert dumps_under(s3[1], backed_up["prefix"]) == before
    assert latest(s3[1], backed_up["prefix"]) == pointer
    assert list(tmp_path.iterdir()) == []


def test_retention_keeps_the_newest_n(source, head_env, s3):
    prefix = f"{secrets.token_hex(4)}/backups/"
    env = {**head_env, "MLFLOW_BACKUP_DESTINATION": f"s3://{BUCKET}/{prefix}", "MLFLOW_BACKUP_KEEP": "2"}
    made = []
    for _ in range(3):
        done = run(BACKUP, MLFLOW_BACKEND_STORE_URI=source["uri"], **env)
        assert done.returncode == 0, done.stderr
        made.append(next(n for n in dumps_under(s3[1], prefix) if n in done.stdout))
    assert made == sorted(set(made))  # three distinct names, in time order
    assert dumps_under(s3[1], prefix) == sorted([*made[1:], "latest"])
    assert latest(s3[1], prefix) == made[-1]
    assert "2 backups kept" in done.stdout and "1 deleted" in done.stdout


def test_backup_of_a_database_mlflow_never_opened_uploads_nothing(databases, head_env, s3):
    prefix = f"{secrets.token_hex(4)}/backups/"
    env = {**head_env, "MLFLOW_BACKUP_DESTINATION": f"s3://{BUCKET}/{prefix}"}
    done = run(BACKUP, MLFLOW_BACKEND_STORE_URI=databases(), **env)
    assert done.returncode == 0 and "nothing to back up" in done.stdout, done.stderr
    assert dumps_under(s3[1], prefix) == []


@pytest.mark.parametrize("script, env, message", [
    (BACKUP, {}, "MLFLOW_BACKEND_STORE_URI is not set"),
    (BACKUP, {"MLFLOW_BACKEND_STORE_URI": "sqlite:///mlflow.db"}, "must be a postgresql:// URI"),
    (BACKUP, {"MLFLOW_BACKEND_STORE_URI": "postgresql://u@h/db"}, "MLFLOW_BACKUP_DESTINATION is not set"),
    (BACKUP, {"MLFLOW_BACKEND_STORE_URI": "postgresql://u@h/db", "MLFLOW_BACKUP_DESTINATION": "/backups"},
     "must be an s3:// URI"),
    (BACKUP, {"MLFLOW_BACKEND_STORE_URI": "postgresql://u@h/db", "MLFLOW_BACKUP_DESTINATION": "s3://b/p",
              "MLFLOW_BACKUP_KEEP": "0"}, "MLFLOW_BACKUP_KEEP must be"),
    (RESTORE, {"MLFLOW_BACKEND_STORE_URI": "postgresql://u@h/db"}, "MLFLOW_BACKUP_DESTINATION is not set"),
])
def test_bad_configuration_is_one_line_and_exit_2(script, env, message):
    done = run(script, **env)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""
