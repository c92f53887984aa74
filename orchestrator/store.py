"""The MLflow tracking store a command works with: its URI, a client, where artifacts go.

Light on purpose (no Ray, no torch): every command imports it before it knows what it will do.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from orchestrator.errors import LookupProblem

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # what `mlflow ui` opens in the same folder


def tracking_uri(given: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db."""
    return given or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (None for any other store)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):]).expanduser().resolve()


def connect(uri: str):
    """A client of the store, ready to use.

    A server is asked for its health first (one clear error instead of minutes of retries). A
    sqlite store is created or upgraded under a file lock: two sweeps started at once in a new
    folder would otherwise run MLflow's schema migrations into each other.
    """
    from mlflow.tracking import MlflowClient

    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).read()
        except (urllib.error.URLError, OSError) as err:
            raise LookupProblem(
                f"the tracking server {uri} does not answer ({err}). Start it (mlflow/serve) "
                "or point --tracking-uri / MLFLOW_TRACKING_URI at the right one."
            ) from err
    database = sqlite_path(uri)
    if database is None:
        return MlflowClient(uri)
    from filelock import FileLock

    database.parent.mkdir(parents=True, exist_ok=True)
    # The lock file lives in the temp folder, not beside the user's database.
    key = hashlib.sha256(str(database).encode()).hexdigest()[:16]
    with FileLock(Path(tempfile.gettempdir()) / f"gansweep-store-{key}.lock"):
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # creates or migrates the schema, here and now
    return client


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a sqlite store (MLflow's default is the
    *working* folder's ./mlruns, wherever the database is); the server's own choice otherwise."""
    database = sqlite_path(uri)
    if database is None:
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment)
    return (database.parent / "mlruns" / folder).as_uri()
