"""The sweep's storage (Tune's checkpoints, the staged model sources): where it is, copies in and out,
and whether it is one place that every node can write, checked before any trial starts.

Checkpoints are how nothing is lost: a trial retried on another node resumes from its last
checkpoint, and the driver logs sample grids and models from them. A local path on a cluster of
several machines gives each machine a folder of its own, and the loss only shows when a node dies.
So the driver writes a token into the storage, every live node reads it back and writes its own
answer next to it, and the driver looks for every answer.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pyarrow.fs

PROBE_DIR = ".gansweep-probe"
NODE_TIMEOUT_S = 60.0
SHARED_HINT = ("Checkpoints must be shared by every node: a trial retried on another node resumes from "
               "them, and the driver logs samples and models from them. Use s3://BUCKET/PATH (or a "
               "filesystem mounted at the same path on every node, such as NFS or EFS).")


def default() -> str:
    """$GANSWEEP_STORAGE (cluster.yaml sets it on every node to the bucket's sweeps/), else ./sweeps."""
    return os.environ.get("GANSWEEP_STORAGE") or str(Path("sweeps").resolve())


def join(storage: str, name: str) -> str:
    """A place inside the storage: a folder's subfolder, or a key below a URI's."""
    return f"{storage.rstrip('/')}/{name}" if "://" in storage else str(Path(storage) / name)


def resolve(storage: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The filesystem and path of a local folder or a URI (s3://...), as Ray Tune opens them.

    S3-compatible stores (MinIO, ...) are reached through the AWS SDK's own settings, such as
    AWS_ENDPOINT_URL, which boto3 and pyarrow both honour.
    """
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    return pyarrow.fs.FileSystem.from_uri(storage)


def write_problem(storage: str) -> str | None:
    """Why this machine cannot write the storage (a misspelt bucket, no permission...), or None.

    A local folder is not created here (a sweep refused later leaves nothing behind): its nearest
    existing parent must be writable.
    """
    if "://" not in storage:
        existing = Path(storage).expanduser().resolve()
        while not existing.exists():
            existing = existing.parent
        if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
            return None
        return f"--storage {storage}: {existing} is not a folder this user may write. Pick another folder."
    try:
        fs, path = resolve(storage)
        probe = f"{path}/{PROBE_DIR}-{secrets.token_hex(8)}"
        with fs.open_output_stream(probe) as out:
            out.write(b"gansweep")
        fs.delete_file(probe)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return (f"--storage {storage}: cannot write there: {first}. Check the bucket name and path, and that "
                f"this machine may write it (for S3: s3:PutObject, s3:GetObject, s3:ListBucket and "
                f"s3:DeleteObject in its IAM role).")
    return None


def _answer(storage: str, probe: str, token: str, node_id: str) -> str | None:
    """Runs on one node: read the driver's token, write this node's answer. None when both work."""
    try:
        fs, _ = resolve(storage)
        with fs.open_input_stream(f"{probe}/driver") as stream:
            if stream.read().decode() != token:
                return "it reads another token there: a folder of its own with the same name"
        with fs.open_output_stream(f"{probe}/{node_id}") as out:
            out.write(token.encode())
    except FileNotFoundError:
        return "it does not see what this machine wrote there: a folder of its own with the same name"
    except (OSError, ValueError) as error:
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return None


def shared_problem(storage: str) -> str | None:
    """Why the live nodes of the joined Ray cluster do not all share the storage, or None.

    Needs `ray.init` done, and `write_problem` passed on this machine. Nodes started later by the
    autoscaler are not checked here; they run the same image and role as those that are.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    location = storage if "://" in storage else str(Path(storage).expanduser().resolve())
    fs, path = resolve(location)
    token = secrets.token_hex(16)
    probe = f"{path}/{PROBE_DIR}-{token[:16]}"
    created_root = "://" not in storage and not Path(location).exists()
    fs.create_dir(probe, recursive=True)
    try:
        with fs.open_output_stream(f"{probe}/driver") as out:
            out.write(token.encode())
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        answer = ray.remote(num_cpus=0, max_retries=0)(_answer)
        pending = {n["NodeID"]: answer.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(location, probe, token, n["NodeID"]) for n in nodes}
        failures = []
        for node_id, ref in pending.items():
            address = next(n["NodeManagerAddress"] for n in nodes if n["NodeID"] == node_id)
            try:
                why = ray.get(ref, timeout=NODE_TIMEOUT_S)
            except ray.exceptions.GetTimeoutError:
                why = f"it did not answer within {NODE_TIMEOUT_S:.0f} s"
            if why is None and fs.get_file_info(f"{probe}/{node_id}").type == pyarrow.fs.FileType.NotFound:
                why = "what it wrote there does not reach this machine"
            if why:
                failures.append(f"node {node_id[:8]} ({address}): {why}")
    finally:
        fs.delete_dir(probe)
        if created_root and not any(Path(location).iterdir()):
            Path(location).rmdir()  # a refused sweep leaves nothing behind
    if not failures:
        return None
    return (f"--storage {storage} is not shared by every node of the cluster: " + "; ".join(failures)
            + f". {SHARED_HINT}")


def upload(local: Path, destination: str) -> None:
    """Copy a local folder to `destination` in the storage (a folder or s3://...)."""
    fs, path = resolve(destination)
    fs.create_dir(path, recursive=True)
    pyarrow.fs.copy_files(str(local), path, source_filesystem=pyarrow.fs.LocalFileSystem(),
                          destination_filesystem=fs)


def download(source: str, local: Path) -> None:
    """Copy the folder `source` in the storage to a local folder."""
    fs, path = resolve(source)
    local.mkdir(parents=True, exist_ok=True)
    pyarrow.fs.copy_files(path, str(local), source_filesystem=fs,
                          destination_filesystem=pyarrow.fs.LocalFileSystem())


def read_file(path: str) -> bytes | None:
    """A file in the storage, or None where there is none."""
    fs, where = resolve(path)
    try:
        with fs.open_input_stream(where) as stream:
            return stream.read()
    except FileNotFoundError:
        return None


def write_file(data: bytes, path: str) -> None:
    """Write a file into the storage (its folder made as needed)."""
    fs, where = resolve(path)
    fs.create_dir(where.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(where) as out:
        out.write(data)
