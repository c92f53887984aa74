"""Trained GAN models as inputs of other trainers: a checkpoint of the gan/dcgan trainer or an MLflow model.

A checkpoint (a directory `checkpoints/epoch_NNN` or its `state.pt`) holds weights only, read with
weights_only=True, and the GAN config that rebuilds the architecture. An MLflow model URI
(`runs:/<run_id>/discriminator`, `models:/<name>@champion`, or a local folder with an `MLmodel`
file) is loaded with `mlflow.pytorch.load_model`: the pickled model carries its own architecture.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from torch import nn

from trainers import checkpoint
from trainers.config import ConfigError
from trainers.gan import export_models
from trainers.gan_config import trainer_of
from trainers.models.gan import Discriminator, Generator

URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")  # runs:/..., models:/..., s3://..., file:///...
ROLES = {"discriminator": Discriminator, "generator": Generator}


def load_gan_model(source: str, role: str, key: str) -> nn.Module:
    """The generator or discriminator (role) at `source`, on the CPU, in eval mode.

    Every way it can be wrong (missing, unreadable, another kind of model) is a ConfigError that
    names the config `key` and says what `source` should be.
    """
    expected = (f"{key} must be an MLflow model URI (runs:/<run_id>/{role}, models:/<name>@champion) "
                "or a checkpoint directory of the gan/dcgan trainer (.../checkpoints/epoch_NNN)")
    if not isinstance(source, str) or not source:
        raise ConfigError(f"{key}={source!r}: {expected}", key=key)
    local = Path(source).expanduser()
    if URI.match(source) or (local / "MLmodel").is_file():
        model = _from_mlflow(source, key)
    elif local.exists():
        model = _from_checkpoint(local, role, key)
    else:
        raise ConfigError(f"{key}={source!r} does not exist: {expected}", key=key)
    if not isinstance(model, ROLES[role]):
        raise ConfigError(f"{key}={source!r} is a {type(model).__name__}, not a {role}: {expected}", key=key)
    return model.cpu().eval()


def _from_mlflow(uri: str, key: str) -> nn.Module:
    import mlflow

    try:
        return mlflow.pytorch.load_model(uri, map_location="cpu")
    except Exception as err:  # MlflowException, OSError, unpickling errors: all mean "not a model here"
        raise ConfigError(f"{key}={uri!r}: cannot load it as an MLflow PyTorch model ({err}). "
                          f"Check the run id or model name and the tracking URI "
                          f"({mlflow.get_tracking_uri()})", key=key) from err


def _from_checkpoint(path: Path, role: str, key: str) -> nn.Module:
    file = path if path.is_file() else path / checkpoint.STATE_FILE
    if not file.is_file():
        raise ConfigError(f"{key}={str(path)!r} holds no checkpoint ({checkpoint.STATE_FILE})", key=key)
    try:
        state = checkpoint.load(file)["task"]
    except Exception as err:  # not a torch file, or one with more than weights in it
        raise ConfigError(f"{key}={str(path)!r}: not a readable checkpoint ({err})", key=key) from err
    if role not in state:
        raise ConfigError(f"{key}={str(path)!r} is not a checkpoint of the gan/dcgan trainer "
                          f"(it holds no {role})", key=key)
    if "config" not in state:
        raise ConfigError(f"{key}={str(path)!r} was written before checkpoints kept their GAN config; "
                          f"use the run's MLflow model URI (runs:/<run_id>/{role}) instead", key=key)
    config = json.loads(state["config"])
    return export_models(trainer_of(config), config, state)[role]
