"""Backups of the tracking database to S3, shared by `mlflow/backup` and `mlflow/restore`.

The runs, metrics, tags and the model registry live in PostgreSQL on the head's disk, which
`ray down` deletes; the dumps live in S3 next to the artifacts. Configuration comes from the
environment, like mlflow/serve (see mlflow/README.md, "Backups"). Exit status: 0 done (or nothing
to do), 1 a step failed (the message says which), 2 bad configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

NAME = re.compile(r"^mlflow-(\d{8}T\d{6}\.\d{3})Z\.dump$")
LATEST = "latest"
MLFLOW_TABLES = ("alembic_version", "experiments", "runs", "registered_models")
DEFAULT_KEEP = 48  # every 10 minutes: the last 8 hours


class Failure(Exception):
    """A message for the user and the exit status that goes with it."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def bad_config(message: str) -> Failure:
    return Failure(message, 2)


@dataclass
class Config:
    database: str  # a libpq URI: pg_dump, psql and psycopg2 read ~/.pgpass for it
    bucket: str
    prefix: str  # ends in "/", e.g. "mlflow/backups/"
    keep: int
    endpoint: str | None

    @property
    def destination(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def database_name(self) -> str:
        return self.database.split("?", 1)[0].rsplit("/", 1)[-1]


def libpq_uri(uri: str) -> str:
    """postgresql+psycopg2://... (SQLAlchemy's spelling, which mlflow/serve accepts) -> postgresql://..."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise bad_config(f"MLFLOW_BACKEND_STORE_URI must be a postgresql:// URI, got '{scheme}://...'. "
                         "Set it as for mlflow/serve, e.g. postgresql://mlflow@localhost:5432/mlflow")
    return f"postgresql://{rest}"


def load_config(env=os.environ, need_s3: bool = True) -> Config:
    backend = env.get("MLFLOW_BACKEND_STORE_URI", "")
    if not backend:
        raise bad_config("MLFLOW_BACKEND_STORE_URI is not set: set it as for mlflow/serve, e.g. "
                         "export MLFLOW_BACKEND_STORE_URI=postgresql://mlflow@localhost:5432/mlflow")
    database = libpq_uri(backend)
    destination = env.get("MLFLOW_BACKUP_DESTINATION", "")
    if not destination and env.get("MLFLOW_ARTIFACTS_DESTINATION", ""):
        destination = env["MLFLOW_ARTIFACTS_DESTINATION"].rstrip("/") + "/backups"
    if not destination and need_s3:
        raise bad_config("MLFLOW_BACKUP_DESTINATION is not set (nor MLFLOW_ARTIFACTS_DESTINATION, which "
                         "it defaults to + /backups): e.g. export MLFLOW_BACKUP_DESTINATION="
                         "s3://my-bucket/mlflow/backups")
    bucket, prefix = "", ""
    if destination:
        if not destination.startswith("s3://"):
            raise bad_config(f"the backup destination must be an s3:// URI, got '{destination}' "
                             "(MLFLOW_BACKUP_DESTINATION or MLFLOW_ARTIFACTS_DESTINATION + /backups).")
        bucket, _, prefix = destination[len("s3://"):].partition("/")
        if not bucket:
            raise bad_config(f"no bucket in the backup destination '{destination}': s3://BUCKET/PREFIX")
        prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    keep_text = env.get("MLFLOW_BACKUP_KEEP", "") or str(DEFAULT_KEEP)
    if not keep_text.isdigit() or int(keep_text) < 1:
        raise bad_config(f"MLFLOW_BACKUP_KEEP must be a whole number >= 1, got '{keep_text}'.")
    endpoint = env.get("MLFLOW_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL") or None
    return Config(database, bucket, prefix, int(keep_text), endpoint)


def need(program: str) -> str:
    path = shutil.which(program)
    if not path:
        raise bad_config(f"{program} is not installed: install the PostgreSQL client tools "
                         "(apt-get install postgresql-client), the same major version as the server.")
    return path


def run_tool(args: list[str], what: str, hint: str = "", **kwargs) -> subprocess.CompletedProcess:
    """Run a PostgreSQL client tool; never prompt for a password (-w style: PGPASSFILE or ~/.pgpass)."""
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
                          **kwargs)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        # pg_dump/psql print "error: ..." first, then detail lines: the first error says the most.
        errors = [line for line in lines if "error:" in line.lower() or "fatal:" in line.lower()]
        detail = (errors or lines[-1:] or [f"exit status {done.returncode}"])[0]
        raise Failure(f"{what} failed: {detail}{hint if 'timeout' in detail else ''}")
    return done


# --- PostgreSQL ---------------------------------------------------------------------------------

def connect(config: Config):
    try:
        import psycopg2
    except ImportError as error:
        raise bad_config(f"{error}: install the server extra (pip install -e '.[server]') and run this "
                         "with that Python (on the head: ~/venv/bin/python).") from None
    try:
        return psycopg2.connect(config.database, connect_timeout=10)
    except psycopg2.OperationalError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "no detail"
        raise bad_config(f"cannot open the database '{config.database_name}': {first}. Check that "
                         "PostgreSQL runs and the host, user and password (~/.pgpass) of "
                         "MLFLOW_BACKEND_STORE_URI.") from None


def mlflow_tables(conn) -> list[str]:
    """MLflow's tables in the database (catalog only: takes no lock on the tables themselves)."""
    with conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                    "AND table_name = ANY(%s) ORDER BY table_name", (list(MLFLOW_TABLES),))
        return [row[0] for row in cur.fetchall()]


def contents(conn) -> dict:
    """How much the database holds, for the messages: experiments, runs, registered models."""
    out = {}
    with conn.cursor() as cur:
        cur.execute("SET LOCAL lock_timeout = '10s'")
        for table in ("experiments", "runs", "registered_models"):
            try:
                cur.execute(f"SELECT count(*) FROM {table}")
                out[table] = cur.fetchone()[0]
            except Exception:
                conn.rollback()
                cur.execute("SET LOCAL lock_timeout = '10s'")
                out[table] = "?"
        try:
            cur.execute("SELECT version_num FROM alembic_version")
            row = cur.fetchone()
            out["schema"] = row[0] if row else "?"
        except Exception:
            conn.rollback()
            out["schema"] = "?"
    conn.rollback()
    return out


def describe(counts: dict) -> str:
    return (f"{counts.get('experiments', '?')} experiments, {counts.get('runs', '?')} runs, "
            f"{counts.get('registered_models', '?')} registered models")


# --- S3 -----------------------------------------------------------------------------------------

def s3_client(config: Config):
    try:
        import boto3
        import botocore.exceptions  # noqa: F401
    except ImportError as error:
        raise bad_config(f"{error}: install boto3 (the project depends on it) and run this with the "
                         "project's Python (on the head: ~/venv/bin/python).") from None
    session = boto3.Session()
    if session.get_credentials() is None:
        raise bad_config("no AWS credentials: attach an instance role with access to the bucket or export "
                         "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (never write them in a file here).")
    return session.client("s3", endpoint_url=config.endpoint)


def check_bucket(s3, config: Config) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3.head_bucket(Bucket=config.bucket)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            raise bad_config(f"S3 bucket '{config.bucket}' does not exist (backup destination "
                             f"{config.destination}): create it or fix MLFLOW_BACKUP_DESTINATION.") from None
        if code in ("403", "AccessDenied"):
            raise bad_config(f"access to S3 bucket '{config.bucket}' is denied: grant the role s3:ListBucket "
                             f"on it and s3:GetObject/PutObject/DeleteObject on {config.prefix}*.") from None
        raise Failure(f"cannot reach S3 bucket '{config.bucket}': {error}") from None
    except BotoCoreError as error:
        raise Failure(f"cannot reach S3 bucket '{config.bucket}': {error}") from None


def list_dumps(s3, config: Config) -> list[dict]:
    """The backups under the prefix, oldest first (the names sort by time)."""
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=config.bucket, Prefix=config.prefix):
        for obj in page.get("Contents", []):
            if NAME.match(obj["Key"][len(config.prefix):]):
                found.append(obj)
    return sorted(found, key=lambda obj: obj["Key"])


def taken_at(key: str) -> datetime:
    stamp = NAME.match(key.rsplit("/", 1)[-1]).group(1)
    return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%f").replace(tzinfo=timezone.utc)


def size_text(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError


def age_text(when: datetime) -> str:
    seconds = max(0, (datetime.now(timezone.utc) - when).total_seconds())
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


@contextlib.contextmanager
def scratch(suffix: str):
    """A temporary file that is gone afterwards whatever happens (a partial dump included)."""
    fd, name = tempfile.mkstemp(prefix="gansweep-mlflow-", suffix=suffix,
                                dir=os.environ.get("MLFLOW_BACKUP_TMPDIR") or None)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


@contextlib.contextmanager
def one_at_a_time(config: Config):
    """The timer's backup and the one at shutdown may overlap: let them take turns, so that `latest`
    always names the newest dump and retention sees every upload."""
    tag = re.sub(r"[^A-Za-z0-9]+", "-", f"{config.bucket}/{config.prefix}").strip("-")
    path = Path(tempfile.gettempdir()) / f"gansweep-mlflow-backup-{os.getuid()}-{tag}.lock"
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --- backup -------------------------------------------------------------------------------------

def backup(config: Config) -> str:
    s3 = s3_client(config)
    check_bucket(s3, config)  # before the dump: a bad bucket costs nothing and changes nothing
    pg_dump, pg_restore = need("pg_dump"), need("pg_restore")
    conn = connect(config)
    try:
        if not mlflow_tables(conn):
            return (f"database '{config.database_name}' has no MLflow tables yet (the tracking server never "
                    "started on it): nothing to back up.")
        conn.rollback()
        with one_at_a_time(config), scratch(".dump") as path:
            began = time.monotonic()
            now = datetime.now(timezone.utc)
            name = f"mlflow-{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z.dump"
            lock_wait = os.environ.get("MLFLOW_BACKUP_LOCK_TIMEOUT", "") or "120s"
            # pg_dump reads one consistent snapshot; the server keeps writing meanwhile. A non-zero
            # exit leaves a partial file that must never be uploaded.
            run_tool([pg_dump, "--format=custom", "--no-password", f"--lock-wait-timeout={lock_wait}",
                      f"--file={path}", f"--dbname={config.database}"], "pg_dump",
                     hint=f" (a table stayed locked longer than MLFLOW_BACKUP_LOCK_TIMEOUT={lock_wait}: "
                          "a schema upgrade running? The next backup retries; nothing was uploaded.)")
            toc = run_tool([pg_restore, "--list", str(path)], "reading the dump back (pg_restore --list)")
            if "TABLE DATA public runs" not in toc.stdout:
                raise Failure(f"the dump of '{config.database_name}' holds no data of table runs: "
                              "not uploaded.")
            counts = contents(conn)
            key = config.prefix + name
            metadata = {k: str(v) for k, v in counts.items()}
            # S3 makes an object visible only once its upload is complete (multipart included).
            s3.upload_file(str(path), config.bucket, key, ExtraArgs={"Metadata": metadata})
            s3.put_object(Bucket=config.bucket, Key=config.prefix + LATEST, Body=(name + "\n").encode(),
                          ContentType="text/plain")
            size = path.stat().st_size
            dumps = list_dumps(s3, config)
            stale = [obj["Key"] for obj in dumps[:-config.keep] if obj["Key"] != key]
            for start in range(0, len(stale), 1000):
                s3.delete_objects(Bucket=config.bucket,
                                  Delete={"Objects": [{"Key": k} for k in stale[start:start + 1000]],
                                          "Quiet": True})
            seconds = time.monotonic() - began
        return (f"s3://{config.bucket}/{key} ({size_text(size)}; {describe(counts)}) in {seconds:.1f} s; "
                f"{len(dumps) - len(stale)} backups kept (MLFLOW_BACKUP_KEEP={config.keep}), "
                f"{len(stale)} deleted.")
    finally:
        conn.close()


# --- restore ------------------------------------------------------------------------------------

def other_sessions(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
        count = cur.fetchone()[0]
    conn.rollback()
    return count


def pick(s3, config: Config, wanted: str | None) -> dict | None:
    dumps = list_dumps(s3, config)
    if not wanted or wanted == LATEST:
        return dumps[-1] if dumps else None
    name = wanted.rsplit("/", 1)[-1]
    for obj in dumps:
        if obj["Key"].endswith("/" + name) or obj["Key"] == name:
            return obj
    newest = ", ".join(obj["Key"][len(config.prefix):] for obj in dumps[-3:]) or "none"
    raise bad_config(f"no backup named '{name}' under {config.destination} (newest: {newest}).")


def restore(config: Config, wanted: str | None, force: bool, if_empty: bool) -> str:
    pg_restore, psql = need("pg_restore"), need("psql")
    local = Path(wanted) if wanted and Path(wanted).is_file() else None
    conn = connect(config)
    try:
        present = mlflow_tables(conn)
        if present:
            held = describe(contents(conn))
            if if_empty:
                return (f"database '{config.database_name}' already holds MLflow tables ({held}): "
                        "nothing restored.")
            if not force:
                raise Failure(f"database '{config.database_name}' already holds MLflow tables ({held}); "
                              "refusing to overwrite it. To replace it with the backup, stop the tracking "
                              "server (sudo systemctl stop gansweep-mlflow) and rerun with --force.")
            sessions = other_sessions(conn)
            if sessions:
                raise Failure(f"--force: {sessions} other session(s) are connected to "
                              f"'{config.database_name}' (the tracking server?): stop them first "
                              "(sudo systemctl stop gansweep-mlflow).")
        if local:
            source, when, size = str(local), None, local.stat().st_size
        else:
            if not config.bucket:
                raise bad_config("MLFLOW_BACKUP_DESTINATION is not set (nor MLFLOW_ARTIFACTS_DESTINATION): "
                                 "set it, or name a local dump file.")
            s3 = s3_client(config)
            check_bucket(s3, config)
            obj = pick(s3, config, wanted)
            if obj is None:
                return f"no backup under {config.destination}: nothing to restore (a first start)."
            source, when, size = f"s3://{config.bucket}/{obj['Key']}", taken_at(obj["Key"]), obj["Size"]
        with scratch(".dump") as dump, scratch(".sql") as script:
            if local:
                shutil.copyfile(local, dump)
            else:
                s3.download_file(config.bucket, obj["Key"], str(dump))
            # Objects are owned by whoever restores (the role mlflow on the head), whatever the source.
            run_tool([pg_restore, "--no-owner", "--no-privileges", f"--file={script}", str(dump)],
                     f"reading {source} (pg_restore)")
            # One transaction: a restore that fails (or --force's drop before it) leaves the
            # database exactly as it was.
            wipe = ["--command=DROP SCHEMA public CASCADE; CREATE SCHEMA public;"] if present else []
            run_tool([psql, "--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1",
                      "--single-transaction", f"--dbname={config.database}", *wipe, f"--file={script}"],
                     f"restoring {source} into '{config.database_name}' (psql)")
        conn.rollback()
        counts = contents(conn)
    finally:
        conn.close()
    taken = f"taken {when:%Y-%m-%d %H:%M:%S} UTC, {age_text(when)}; " if when else ""
    return (f"restored {source} ({taken}{size_text(size)}) into '{config.database_name}'"
            f"{' (replacing what it held)' if present else ''}: {describe(counts)}, "
            f"schema revision {counts.get('schema', '?')}.")


# --- entry points -------------------------------------------------------------------------------

def main(command: str, argv: list[str] | None = None) -> int:
    prog = f"mlflow/{command}"
    if command == "backup":
        parser = argparse.ArgumentParser(prog=prog, description=(
            "Dump the MLflow tracking database (pg_dump -Fc) to S3 and keep the newest MLFLOW_BACKUP_KEEP."))
    else:
        parser = argparse.ArgumentParser(prog=prog, description=(
            "Restore the newest (or a named) backup into the MLflow tracking database, only if it has no "
            "MLflow tables yet unless --force."))
        parser.add_argument("name", nargs="?", help="a backup's name (mlflow-...Z.dump), its s3:// URI, "
                            "or a local dump file; default: the newest under the destination")
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--force", action="store_true",
                           help="replace a database that already holds MLflow tables (stop the server first)")
        group.add_argument("--if-empty", action="store_true",
                           help="a database that already holds MLflow tables is left alone, exit status 0")
    args = parser.parse_args(argv)
    try:
        if command == "backup":
            message = backup(load_config())
        else:
            local = bool(args.name) and Path(args.name).is_file()
            message = restore(load_config(need_s3=not local), args.name, args.force, args.if_empty)
    except Failure as failure:
        print(f"{prog}: {failure}", file=sys.stderr)
        return failure.status
    except Exception as error:  # boto3/psycopg2 errors mid-way: one line, not a traceback
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"{prog}: failed: {type(error).__name__}: {first}", file=sys.stderr)
        return 1
    print(f"{prog}: {message}")
    return 0
