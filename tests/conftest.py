"""Shared fixtures: a session cache (evaluators trained once), tiny image datasets made here."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from services import pg_database, server, server_env  # noqa: F401 - fixtures shared by every module

SHAPES = ("bar", "column", "box")


def draw(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy white shape on black whose class is easy to tell apart."""
    image = rng.integers(0, 40, (size, size)).astype(np.uint8)
    a, b = sorted(rng.integers(size // 5, size - size // 5, 2))
    b = max(b, a + 3)
    if kind == "bar":
        image[a:b, 2:-2] = 230
    elif kind == "column":
        image[2:-2, a:b] = 230
    else:
        image[a:b, a:b] = 230
    return image


def make_folder(root: Path, per_class: int = 60, size: int = 28, rgb: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for kind in SHAPES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = draw(kind, size, rng)
            picture = Image.fromarray(pixels)
            (picture.convert("RGB") if rgb else picture).save(root / kind / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory) -> Path:
    import os

    path = tmp_path_factory.mktemp("gansweep-cache")
    os.environ["GANSWEEP_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> Path:
    """Three classes of 28x28 grey shapes as an ImageFolder tree."""
    return make_folder(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="session")
def tiny(shapes) -> dict:
    """Config overrides for a GAN run of a second or two on the shapes folder."""
    return {"dataset": "folder", "data_path": str(shapes), "channels": 1, "image_size": 28,
            "batch_size": 16, "max_train": 64, "eval_samples": 48, "sample_grid": 16,
            "ngf": 8, "ndf": 8, "epochs": 2}


@pytest.fixture(scope="session")
def tiny_mlp(tiny) -> dict:
    """The same for the MLP GAN (no ngf/ndf; small hidden layers)."""
    return {**{k: v for k, v in tiny.items() if k not in ("ngf", "ndf")}, "hidden": [32, 32, 32]}


@pytest.fixture(scope="session", autouse=True)
def ray_sandbox(tmp_path_factory):
    """Ray's temp folder (sessions, the 'current cluster' file that `--address auto` reads) of its
    own, and no token auth between these throwaway clusters and their drivers: the suite never
    touches a Ray instance of the user's."""
    import os
    import tempfile

    root = tempfile.mkdtemp(prefix="gsray-")  # short: Ray's socket paths must fit in 107 bytes
    os.environ["RAY_TMPDIR"] = root
    os.environ["RAY_AUTH_MODE"] = "disabled"
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster(cache_dir):
    """One real single-node Ray cluster for every test that sweeps (each start costs seconds)."""
    from clusters import LocalCluster

    cluster = LocalCluster(head_cpus=2)
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="session")
def ray_address(ray_cluster) -> str:
    return ray_cluster.address


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """moto's S3 server on loopback (a subprocess: the test process stays thread-free for fork),
    with the bucket `services.BUCKET`: (endpoint URL, a boto3 client)."""
    import subprocess
    import sys

    from services import BUCKET, clean_env, free_port, wait_http

    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server", reason="pip install 'moto[server]' (the test extra)")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{endpoint}/moto-api/", proc, log, timeout=60)
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        proc.terminate()
        proc.wait(timeout=10)
