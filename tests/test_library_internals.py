"""Each private Ray, Optuna and MLflow internal that orchestrator/library_internals.py uses, as the
installed version has it: run this file first after raising a pin in constraints.txt. A failure names
the internal that changed; what uses it is written beside it in library_internals.py."""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import pickle
import re
from pathlib import Path

import optuna
import pytest

from orchestrator import library_internals
from orchestrator.space.loading import load_space
from orchestrator.tracking import ui_view

ROOT = Path(__file__).resolve().parents[1]


def pinned(package: str) -> str:
    """The version constraints.txt installs."""
    match = re.search(rf"^{package}==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert match, f"{package} is not pinned in constraints.txt"
    return match.group(1)


@pytest.mark.parametrize("package", sorted(library_internals.CHECKED))
def test_each_internal_was_checked_against_the_pinned_version(package: str) -> None:
    """Raising a pin means reading the internals again: bump CHECKED once they pass here."""
    assert library_internals.CHECKED[package] == pinned(package)


# -- Optuna ----------------------------------------------------------------------------------------
def test_the_grid_sampler_runs_start_from_first_and_every_point_once() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    grid = {"lr": [0.1, 0.2, 0.3], "loss": ["bce", "hinge"]}
    first = [{"lr": 0.3, "loss": "hinge"}, {"lr": 0.1, "loss": "bce"}]
    sampler = library_internals.grid_sampler(grid, seed=0, first=first)
    study = optuna.create_study(sampler=pickle.loads(pickle.dumps(sampler)))  # Tune pickles it
    seen = []
    for _ in range(6):  # ask and tell, as Ray's OptunaSearch does: never study.optimize
        trial = study.ask()
        seen.append({name: trial.suggest_categorical(name, values) for name, values in grid.items()})
        study.tell(trial, 1.0)  # GridSampler's own after_trial would call study.stop() after the last
    assert seen[:2] == first
    assert sorted(map(str, seen)) == sorted(str({"lr": lr, "loss": loss}) for lr in grid["lr"]
                                            for loss in grid["loss"])


# -- Ray Tune ----------------------------------------------------------------------------------------
def test_the_stored_snapshot_names_each_trials_newest_kept_checkpoint(ray_address, tmp_path: Path) -> None:
    """A real Tune run that keeps 3 checkpoints of one trial: the stored experiment snapshot's
    pickled checkpoint manager is read for the newest index."""
    import pyarrow.fs
    import ray
    from ray import tune

    def trainable(config):
        for step in range(3):
            folder = Path(tune.get_context().get_trial_dir()) / f"out{step}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "x").write_text(str(step))
            tune.report({"step": step}, checkpoint=tune.Checkpoint.from_directory(str(folder)))

    ray.init(address=ray_address, ignore_reinit_error=True, log_to_driver=False)
    try:
        tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}), run_config=tune.RunConfig(
            name="internals", storage_path=str(tmp_path), verbose=0))
        result = tuner.fit()[0]
    finally:
        ray.shutdown()
    trial_id = result.metrics["trial_id"]
    needed = library_internals.snapshot_checkpoints(pyarrow.fs.LocalFileSystem(), str(tmp_path / "internals"))
    assert needed == {trial_id: 2}


# -- Ray: the cluster config in the GCS, the launcher, the autoscaler -------------------------------------
def test_the_cluster_config_channel_is_where_it_was() -> None:
    """The calls are there (tests/test_autoscaling.py publishes node types to a real GCS and sees
    a sweep judged by them)."""
    import ray._private.state
    from ray._private.services import canonicalize_bootstrap_address_or_die
    from ray._raylet import InnerGcsClient
    from ray.core.generated import autoscaler_pb2

    assert callable(ray._private.state.state.get_cluster_config)
    assert callable(InnerGcsClient.report_cluster_config)  # GcsClient hands its calls to it
    assert "addr" in inspect.signature(canonicalize_bootstrap_address_or_die).parameters
    fields = set(autoscaler_pb2.NodeGroupConfig.DESCRIPTOR.fields_by_name)
    assert {"name", "resources", "min_count", "max_count"} <= fields
    assert "node_group_configs" in autoscaler_pb2.ClusterConfig.DESCRIPTOR.fields_by_name


def test_the_launchers_validation_takes_cluster_yaml_and_refuses_a_bad_field() -> None:
    import copy

    import jsonschema
    import yaml

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    prepared = library_internals.launcher_validated(copy.deepcopy(config))
    assert set(config["available_node_types"]) == set(prepared["available_node_types"])
    with pytest.raises(jsonschema.ValidationError):
        library_internals.launcher_validated({**copy.deepcopy(config), "max_workers": "many"})


def test_rays_utilization_score_ranks_a_node_type_for_a_demand() -> None:
    from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary

    summary = NodeAvailabilitySummary(node_availabilities={})
    fits = library_internals.utilization_score({"CPU": 4, "GPU": 1}, [{"GPU": 1}], summary)
    assert isinstance(fits, tuple) and fits
    assert library_internals.utilization_score({"CPU": 4}, [{"GPU": 1}], summary) is None


def test_the_token_auth_logger_still_exists() -> None:
    importlib.import_module(library_internals.TOKEN_SETUP_LOGGER)
    assert library_internals.TOKEN_SETUP_LOGGER in logging.Logger.manager.loggerDict


# -- MLflow ----------------------------------------------------------------------------------------------
def ui_bundle() -> str:
    import mlflow

    folder = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    return "\n".join(path.read_text(errors="ignore") for path in folder.glob("*.js"))


def test_the_ui_reads_every_field_of_the_saved_view_we_write() -> None:
    space = load_space(ROOT / "search_spaces" / "quickstart.yaml")
    view = ui_view.state(space, "0123")
    envelope = json.loads(library_internals.view_envelope("name", view, 1))
    bundle = ui_bundle()
    wanted = {"sharedViewState", library_internals.VIEW_LINK_PARAM, *envelope, *view,
              *(key for chart in view["compareRunCharts"] for key in chart),
              *(key for section in view["compareRunSections"] for key in section)}
    missing = sorted(key for key in wanted if key not in bundle)
    assert not missing, f"MLflow's UI no longer knows {missing}: read its saved-view code again"
    assert library_internals.VIEW_TAG_PREFIX == "mlflow.sharedViewState."
    assert library_internals.view_state(library_internals.view_envelope("n", view, 1)) == view


def test_the_logged_models_versions_tag_and_the_uri_parser(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    assert library_internals.model_versions_tag() == "mlflow.modelVersions"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert library_internals.model_name_and_version(client, "models:/quickstart-generator/3") == (
        "quickstart-generator", "3")


def test_the_rest_request_takes_the_arguments_we_pass() -> None:
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    taken = inspect.signature(http_request).parameters
    assert {"host_creds", "endpoint", "method", "max_retries", "backoff_factor", "timeout"} <= set(taken)
    creds = get_default_host_creds("http://127.0.0.1:1")
    assert hasattr(creds, "username") and hasattr(creds, "token")
