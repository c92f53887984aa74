"""Checkpoints: one `state.pt` per directory, written atomically, read with weights_only=True."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from trainers.config import ConfigError

STATE_FILE = "state.pt"


def save(state: dict[str, Any], path: str | Path) -> Path:
    """Write state via a temporary file and a rename, so a crash never leaves half a file.

    A directory path gets `state.pt` inside it.
    """
    path = Path(path)
    if path.suffix != ".pt":
        path = path / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(directory)
    path = path if path.is_file() else path / STATE_FILE
    if not path.is_file():
        raise ConfigError(f"resume_from={str(directory)!r}: no checkpoint ({STATE_FILE}) there",
                          key="resume_from")
    # An artifact store is not a trusted source of code: tensors and plain containers only.
    return torch.load(path, map_location=map_location, weights_only=True)
