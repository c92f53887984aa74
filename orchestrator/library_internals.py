"""Every use gansweep makes of a private Ray, Optuna or MLflow internal, and nowhere else.

Each one below was read in the version `CHECKED` names (the versions constraints.txt installs) and
has a test in tests/test_library_internals.py that fails when an upgrade changes it: run that file
first after raising a pin. The libraries are imported inside each function, so that importing this
module costs nothing (the command line and Ray's autoscaler import it).

Behaviour relied on without an import, tested where it is used:
- Ray Tune hands a stopper's result dict on to the callbacks as the trial's last result
  (`TuneController._process_trial_result`): orchestrator/space/collapse.py, tests/test_collapse.py.
- MLflow's UI reads the saved-view state fields that orchestrator/tracking/ui_view.py writes (the
  names in its JS bundle): tests/test_library_internals.py reads them there, tests/test_ui_browser.py
  opens the view.
"""

from __future__ import annotations

import json
import re
from typing import Any

CHECKED = {"ray": "2.60.0", "optuna": "5.0.0", "mlflow": "3.17.2"}


# -- Optuna: the order of GridSampler's points ------------------------------------------------------
def grid_sampler(grid: dict[str, list[Any]], seed: int, first: list[dict[str, Any]]) -> Any:
    """An Optuna GridSampler that runs the `first` points (a space's start_from) before the rest of
    its shuffled grid, each once, and never calls study.stop() after the last point: outside
    study.optimize (Ray's OptunaSearch asks and tells) that raises RuntimeError (optuna #4121, #5141);
    num_samples <= the grid size ends the sweep instead.

    Optuna 5.0: `GridSampler.before_trial` gives trial number i the i-th point of `_all_grids`, a list
    of tuples in `_param_names` order; `after_trial` calls study.stop() once the grid is used up.
    Enqueued trials would not count as grid points: the grid would run them again and skip others."""
    import optuna

    class PointsFirstGridSampler(optuna.samplers.GridSampler):
        def __init__(self) -> None:
            super().__init__(grid, seed=seed)
            points = list(dict.fromkeys(tuple(point[name] for name in self._param_names) for point in first))
            self._all_grids = points + [g for g in self._all_grids if g not in points]

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

        def __reduce__(self) -> tuple:  # Tune pickles the searcher: rebuilt alike, the shuffle is seeded
            return grid_sampler, (grid, seed, first)

    return PointsFirstGridSampler()


# -- Ray Tune: which checkpoint the stored experiment snapshot restores -----------------------------
SNAPSHOT = re.compile(r"(^|/)experiment_state-[^/]+\.json$")
PICKLED_CHECKPOINT = re.compile(rb"/checkpoint_(\d{6})")


def snapshot_checkpoints(fs: Any, experiment_dir: str) -> dict[str, int]:
    """Trial id -> the index of the checkpoint the newest experiment snapshot in storage restores it
    from: the newest its checkpoint manager holds.

    Ray 2.60: `experiment_state-<time>.json` holds `trial_data`, pairs of (trial state, runtime
    metadata) as JSON or JSON strings; the runtime's `checkpoint_manager.value` is the manager pickled,
    as hex. Its checkpoint paths are read from those bytes as text, nothing is unpickled. (The last
    result's `checkpoint_dir_name` can run one ahead of the manager, so it is not the answer.)"""
    import pyarrow.fs

    found = fs.get_file_info(pyarrow.fs.FileSelector(experiment_dir))
    names = sorted(info.path for info in found if SNAPSHOT.search(info.path))
    if not names:
        return {}
    with fs.open_input_stream(names[-1]) as stream:
        snapshot = json.loads(stream.read())
    needed = {}
    for trial_state, runtime in snapshot["trial_data"]:
        trial_id = _decoded(trial_state).get("trial_id")
        manager = (_decoded(runtime).get("checkpoint_manager") or {}).get("value") or ""
        held = [int(index) for index in PICKLED_CHECKPOINT.findall(bytes.fromhex(manager))]
        if trial_id and held:
            needed[trial_id] = max(held)
    return needed


def _decoded(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else value


# -- Ray: the cluster's node types in the GCS --------------------------------------------------------
def published_node_groups() -> list[Any] | None:
    """The node groups of the cluster config in the joined cluster's GCS (name, resources,
    max_count each), or None when none was published.

    Ray 2.60: `ray._private.state.state.get_cluster_config()` reads the `ClusterConfig` protobuf that
    Ray Train and Ray Data read to know what an autoscaling cluster can grow to (internal KV namespace
    `__autoscaler`, key `__autoscaler_cluster_config`). Ray's autoscalers do not write it."""
    import ray._private.state

    config = ray._private.state.state.get_cluster_config()
    return list(config.node_group_configs) if config is not None and config.node_group_configs else None


def publish_node_groups(groups: list[dict[str, Any]], address: str) -> None:
    """Write node groups ({name, resources, min_count, max_count}) as the cluster config of the GCS
    at `address` (HOST:PORT, or 'auto').

    Ray 2.60: `ray.core.generated.autoscaler_pb2.ClusterConfig` of `NodeGroupConfig`s (whole-number
    resources), written by `ray._raylet.GcsClient.report_cluster_config`; the address is resolved by
    `ray._private.services.canonicalize_bootstrap_address_or_die`, as `ray status` does."""
    from ray._private.services import canonicalize_bootstrap_address_or_die
    from ray._raylet import GcsClient
    from ray.core.generated import autoscaler_pb2

    config = autoscaler_pb2.ClusterConfig(node_group_configs=[
        autoscaler_pb2.NodeGroupConfig(**group) for group in groups])
    GcsClient(address=canonicalize_bootstrap_address_or_die(address)).report_cluster_config(
        config.SerializeToString())


# -- Ray: the cluster launcher and the autoscaler ------------------------------------------------------
def launcher_validated(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does to a cluster config before it calls the cloud: Ray 2.60's
    `ray.autoscaler._private.util.prepare_config` (defaults merged in) then `validate_config` (the
    launcher's JSON schema, head type, min/max workers). Raises what they raise."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(config)
    validate_config(prepared)
    return prepared


def utilization_score(node_resources: dict[str, float], resources: list[dict[str, float]],
                      node_availability_summary: Any) -> tuple | None:
    """Ray's own score of a node type for a resource demand (None: it fits none of it).

    Ray 2.60's v1 autoscaler loads a scorer from RAY_AUTOSCALER_UTILIZATION_SCORER and calls it as
    `score(node_resources, resources, node_type, node_availability_summary=...)`; its default,
    `_default_utilization_scorer`, is `_resource_based_utilization_scorer` of the first two."""
    from ray.autoscaler._private.resource_demand_scheduler import _resource_based_utilization_scorer

    return _resource_based_utilization_scorer(node_resources, resources,
                                              node_availability_summary=node_availability_summary)


# The logger that warns on every new local Ray 2.60 instance that it turned token auth on.
TOKEN_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"


# -- MLflow: the UI's saved views, and a logged model's registered versions ------------------------------
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # + the view's key: an experiment tag
VIEW_LINK_PARAM = "viewStateShareKey"  # the runs page's query parameter that opens a saved view
VIEW_VALUE_LIMIT = 20000  # the longest experiment tag value (and the UI's own limit for a view)


def view_envelope(name: str, state: dict[str, Any], now_ms: int) -> str:
    """A saved view as MLflow 3.17's UI writes it ("Save as new view"): `{name, createdAt, updatedAt,
    state}` with times in milliseconds and `state` the view as a JSON string (the UI may also deflate
    it; plain JSON is read too). The UI lists these envelopes by name among the experiment's views."""
    return json.dumps({"name": name, "createdAt": now_ms, "updatedAt": now_ms,
                       "state": json.dumps(state, separators=(",", ":"))}, separators=(",", ":"))


def view_state(envelope: str) -> dict[str, Any]:
    """The state inside a saved view's envelope (as written by `view_envelope`)."""
    return json.loads(json.loads(envelope)["state"])


def model_versions_tag() -> str:
    """The logged-model tag that lists its registered versions (MLflow 3.17:
    `mlflow.utils.mlflow_tags.MLFLOW_MODEL_VERSIONS`), which the UI shows on the model's page."""
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    return MLFLOW_MODEL_VERSIONS


def server_get(uri: str, endpoint: str, params: dict[str, Any]) -> Any:
    """One GET to an MLflow server's REST API with the credentials every MLflow call of this process
    sends (MLFLOW_TRACKING_USERNAME/PASSWORD or TOKEN), one retry a second apart (MLflow's default
    retries a 5xx for minutes). MLflow 3.17: `mlflow.utils.credentials.get_default_host_creds` and
    `mlflow.utils.rest_utils.http_request`. Returns (the response, the credentials)."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(uri)
    response = http_request(creds, endpoint, "GET", max_retries=1, backoff_factor=1, timeout=10,
                            params=params)
    return response, creds


def model_name_and_version(client: Any, model_uri: str) -> tuple:
    """A `models:/` URI as (name, version) of a registered model, or (model id,) of a logged model,
    looked up with this client (MLflow 3.17: `mlflow.store.artifact.utils.models.get_model_name_and_version`;
    MLflow's own download would ask the process-wide registry)."""
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    return get_model_name_and_version(client, model_uri)
