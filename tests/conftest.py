"""Shared fixtures: a session cache (evaluators trained once), tiny image datasets made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


@pytest.fixture(scope="session")
def ray_address(cache_dir, tmp_path_factory):
    """One real Ray head for every test that sweeps (each start costs seconds)."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # A throwaway local cluster: no token auth between the test driver and its head.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray = str(Path(sys.executable).parent / "ray")
    temp = tmp_path_factory.mktemp("ray")
    subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
                    "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                   check=True, capture_output=True)
    yield f"127.0.0.1:{port}"
    subprocess.run([ray, "stop", "--force"], capture_output=True)
