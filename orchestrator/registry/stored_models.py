"""Models in the tracking store, read through the command's own client: where a model's files are,
a copy of them, and a sample grid from a generator (`generate`).

MLflow's fluent helpers (the `models:/` resolver of its downloads) use the process-wide tracking URI,
which is ./mlflow.db whatever --tracking-uri said: every lookup here goes through the client.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator import library_internals
from orchestrator.errors import LookupProblem


def model_location(client: MlflowClient, model_uri: str) -> str:
    """Where a model's files are, found with this client.

    MLflow 3.17 resolves `models:/...`, and `runs:/<run_id>/<name>` of a logged model, with the
    process-wide registry whatever tracking URI it is given (ModelsArtifactRepository).
    """
    if model_uri.startswith("models:/"):
        found = library_internals.model_name_and_version(client, model_uri)  # (name, version) or (model id,)
        if len(found) == 2:
            return client.get_model_version_download_uri(*found)
        return client.get_logged_model(found[0]).artifact_location
    if model_uri.startswith("runs:/"):
        run_id, _, name = model_uri[len("runs:/"):].partition("/")
        logged = client.search_logged_models(
            [client.get_run(run_id).info.experiment_id],
            filter_string=f"source_run_id = '{run_id}' AND name = '{name}'")
        if logged:
            return logged[0].artifact_location
    return model_uri  # the run's own artifacts, or a store's URI: no lookup


def download(client: MlflowClient, model_uri: str, folder: Path) -> Path:
    """A model's files, copied into folder from the client's store, without MLflow's progress bar
    (dozens of lines in a pipe or a log)."""
    import mlflow

    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_location(client, model_uri),
                                                    dst_path=str(folder), tracking_uri=client.tracking_uri))


def generate(client: MlflowClient, model_uri: str, n: int, out: Path, seed: int = 0) -> tuple[int, int]:
    """A sample grid from a generator model; one row per class for a conditional one."""
    import mlflow
    import torch
    from torchvision.utils import save_image

    with tempfile.TemporaryDirectory(prefix="gansweep-model-") as folder:
        try:
            generator = mlflow.pytorch.load_model(str(download(client, model_uri, Path(folder))),
                                                  map_location="cpu")
        except MlflowException as err:
            raise LookupProblem(f"cannot load {model_uri} from {client.tracking_uri}: {err.message}") from err
    if not hasattr(generator, "noise_dim"):
        raise LookupProblem(f"{model_uri} is not a gansweep generator (it has no noise_dim)")
    generator.eval()
    torch.manual_seed(seed)
    classes = getattr(generator, "num_classes", 0)
    labels, nrow = None, max(1, int(math.sqrt(n)))
    if classes:
        nrow = max(1, n // classes)  # one row per class
        labels = torch.arange(classes).repeat_interleave(nrow)
        n = len(labels)
    with torch.no_grad():
        images = generator(torch.randn(n, generator.noise_dim), labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, out, nrow=nrow, normalize=True, value_range=(-1, 1))
    return tuple(images.shape[-2:])
