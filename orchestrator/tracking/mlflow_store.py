"""The MLflow tracking store a command works with: its URI, a client, where artifacts go.

Light on purpose (no Ray, no torch): every command imports it before it knows what it will do.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from orchestrator.errors import LookupProblem, UsageError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # what `mlflow ui` opens in the same folder


def tracking_uri(given: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db."""
    return given or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (None for any other store)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):]).expanduser().resolve()


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def flag(uri: str) -> str:
    """` --tracking-uri URI` for a command this one suggests, unless the URI is the default."""
    return "" if uri == DEFAULT_TRACKING_URI else f" --tracking-uri {uri}"


def check(uri: str) -> None:
    """Refuse a store the sweep could not write to, before anything starts; creates nothing.

    A server must answer and accept this process's credentials (LookupProblem, UsageError); a
    sqlite store that does not exist yet must be one this process can create (UsageError).
    """
    if is_server(uri):
        _check_server(uri)
    elif (database := sqlite_path(uri)) is not None and not database.exists():
        folder = next(p for p in database.parents if p.exists())
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"the tracking store {database} cannot be created: {folder} is not a "
                             "writable folder. Pass another --tracking-uri")


def connect(uri: str, create: bool = True):
    """A client of the store, ready to use.

    A server is checked first (one clear error instead of minutes of retries, or a traceback
    ending in `401 != 200`). A sqlite store is created or upgraded under a file lock: two sweeps
    started at once in a new folder would otherwise run MLflow's schema migrations into each
    other. With `create=False` (commands that only read) a missing one is a LookupProblem.
    """
    from mlflow.tracking import MlflowClient

    if is_server(uri):
        _check_server(uri)
    database = sqlite_path(uri)
    if database is None:
        return MlflowClient(uri)
    if not create and not database.exists():
        raise LookupProblem(f"there is no tracking store {database}: run a sweep first, or pass the "
                            "--tracking-uri of the sweep you mean")
    from filelock import FileLock

    database.parent.mkdir(parents=True, exist_ok=True)
    # The lock file lives in the temp folder, not beside the user's database.
    key = hashlib.sha256(str(database).encode()).hexdigest()[:16]
    # MLflow logs each step of making a new store's schema at INFO ("Creating initial MLflow database
    # tables..."): a first sweep's console is gansweep's own.
    for noisy in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with FileLock(Path(tempfile.gettempdir()) / f"gansweep-store-{key}.lock"):
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # creates or migrates the schema, here and now
    return client


def _check_server(uri: str) -> None:
    """The server answers /health (open to all), then one authenticated read."""
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).read()
    except (urllib.error.URLError, OSError) as err:
        raise LookupProblem(
            f"the tracking server {uri} does not answer ({err}). Start it (mlflow/serve) "
            "or point --tracking-uri / MLFLOW_TRACKING_URI at the right one."
        ) from err
    from mlflow.exceptions import MlflowException

    from orchestrator.library_internals import server_get

    try:
        response, creds = server_get(uri, "/api/2.0/mlflow/experiments/search", {"max_results": 1})
    except MlflowException as err:
        raise LookupProblem(f"the tracking server {uri} answers /health but not a search of its "
                            f"experiments ({err.message}). Check its log") from None
    if response.status_code in (401, 403):
        raise UsageError(_refused(uri, response.status_code, creds))
    if response.status_code != 200:
        raise LookupProblem(f"the tracking server {uri} answered {response.status_code} to a search of "
                            f"its experiments: {response.text[:200]!r}. Is it an MLflow server?")


def _refused(uri: str, status: int, creds) -> str:
    """What to do about a 401 or 403, by the credentials that were sent."""
    if not (creds.username or creds.token):
        return (f"the tracking server {uri} wants credentials: set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (a user its admin made, see mlflow/README.md)")
    who = (f"user {creds.username!r} (MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD)" if creds.username
           else "the token in MLFLOW_TRACKING_TOKEN")
    if status == 403:
        return f"the tracking server {uri} gives {who} no access (403): ask its admin for permission"
    return f"the tracking server {uri} refused {who} (401): check them, or ask its admin for a new password"


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a sqlite store (MLflow's default is the
    *working* folder's ./mlruns, wherever the database is); the server's own choice otherwise."""
    database = sqlite_path(uri)
    if database is None:
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment)
    return (database.parent / "mlruns" / folder).as_uri()
