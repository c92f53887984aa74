"""The sweep's ready view in MLflow's UI: the runs table with the columns that rank it, and charts.

MLflow keeps a saved ("shared") view of an experiment as an experiment tag, opened by a link to the
runs page: the envelope, tag and link are MLflow's private UI state (orchestrator/library_internals.py).
The view's `state` holds the runs search (`searchFilter`, `orderByKey`, `orderByAsc`, ...) and the UI
state (`selectedColumns`, `compareRunCharts`, `compareRunSections`, ...): the field names are those of
MLflow 3.17.2's JS bundle (server/js/build), which drops any other key; tests/test_library_internals.py
finds each of them there.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from urllib.parse import quote

from mlflow.tracking import MlflowClient

from orchestrator import library_internals
from orchestrator.space import objective
from orchestrator.tracking import tags
from trainers import catalog

if TYPE_CHECKING:  # `report` and `ui` need no Optuna or pydantic
    from orchestrator.space.search_space import SearchSpace

# The charts' own section. Not the UI's "Model metrics": the UI fills that one with a chart per
# metric (a dozen for a GAN), which would bury the three that rank the sweep.
SECTION = "Sweep: ranking, params, sample grids"


def key_of(parent_run_id: str) -> str:
    """One view per sweep, named after its parent run (what --resume reopens)."""
    return f"gansweep-{parent_run_id}"


def compared(space: SearchSpace) -> list[str]:
    """The ranking metric, the sweep's other objectives, then the metrics compared beside them."""
    spec = catalog.get(space.trainer)
    return list(dict.fromkeys([space.primary_metric, *space.metrics, *spec.compared]))


def columns(space: SearchSpace) -> list[str]:
    """The runs table's columns, as the UI names them (backquoted)."""
    return [*(f"metrics.`{m}`" for m in compared(space)), *(f"params.`{p}`" for p in space.params),
            "metrics.`epoch`", f"tags.`{tags.STATUS}`"]


def _chart(kind: str, uuid: str, name: str, **fields) -> dict:
    """A chart card: the base fields every card of the UI has, and its kind's own."""
    return {"uuid": uuid, "type": kind, "runsCountToCompare": 10, "metricSectionId": "gansweep-section",
            "deleted": False, "isGenerated": False, "displayName": name, **fields}


def charts(space: SearchSpace) -> list[dict]:
    """The metric per epoch of the best trials, the varying params against it, the sample grids."""
    metric = space.primary_metric
    made = [_chart("LINE", "gansweep-metric", f"{metric} per epoch (best 5 trials)", runsCountToCompare=5,
                   metricKey=metric, selectedMetricKeys=[metric], lineSmoothness=0, xAxisScaleType="linear",
                   scaleType="linear", xAxisKey="step", selectedXAxisMetricKey="", yAxisKey="metric",
                   yAxisExpressions=[], ignoreOutliers=False, useGlobalXaxisKey=False,
                   useGlobalLineSmoothing=True,
                   range={"xMin": None, "xMax": None, "yMin": None, "yMax": None})]
    if space.params:
        made.append(_chart("PARALLEL", "gansweep-params", f"params against {metric}", runsCountToCompare=20,
                           selectedParams=list(space.params), selectedMetrics=[metric], showAllRuns=False))
    spec = catalog.get(space.trainer)
    if spec.image_series:  # step 1: every trial has it, stopped early or not
        made.append(_chart("IMAGE", "gansweep-samples", "sample grids", imageKeys=[spec.picture], step=1,
                           showRunParams=False))  # the run's name says its params; the grid gets the room
    return made


def state(space: SearchSpace, parent_run_id: str) -> dict:
    """The view: this sweep's trials (flat, its parent filtered out), best first, and its charts."""
    return {
        "searchFilter": f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        "orderByKey": f"metrics.`{space.primary_metric}`",
        "orderByAsc": objective.ascending(space.primary_mode),
        "startTime": "ALL", "lifecycleFilter": "Active", "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": columns(space), "columnWidths": {},
        # The UI sorts metric columns by name unless told: the ranking metric comes first.
        "columnOrder": ["attributes.`Run Name`", *columns(space)],
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": charts(space),
        "compareRunSections": [{"uuid": "gansweep-section", "name": SECTION, "display": True,
                                "isReordered": False, "deleted": False, "isGenerated": False}],
        "viewMaximized": False, "runListHidden": False, "isAccordionReordered": False, "groupBy": None,
        "groupsExpanded": {}, "useGroupedValuesInCharts": True, "hideEmptyCharts": True,
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def write(client: MlflowClient, experiment_id: str, space: SearchSpace, parent_run_id: str,
          sweep_name: str) -> str:
    """Save the sweep's view on its experiment; its key."""
    key = key_of(parent_run_id)
    name, now_ms = f"{sweep_name}: {space.primary_metric}", int(time.time() * 1000)
    value = library_internals.view_envelope(name, state(space, parent_run_id), now_ms)
    if len(value) > library_internals.VIEW_VALUE_LIMIT:  # very many params: the table alone still ranks it
        view = {**state(space, parent_run_id), "compareRunCharts": [], "compareRunSections": []}
        value = library_internals.view_envelope(name, view, now_ms)
    client.set_experiment_tag(experiment_id, library_internals.VIEW_TAG_PREFIX + key, value)
    return key


def read(client: MlflowClient, experiment_id: str, key: str) -> dict | None:
    """A saved view's state, as the UI decodes it (None if there is none)."""
    value = client.get_experiment(experiment_id).tags.get(library_internals.VIEW_TAG_PREFIX + key)
    return None if value is None else library_internals.view_state(value)


def link(tracking_uri: str, experiment_id: str, key: str | None = None) -> str:
    """The runs table of an experiment in MLflow 3's UI, opened on the sweep's view."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith("http") else "http://127.0.0.1:5000"
    url = f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return f"{url}&{library_internals.VIEW_LINK_PARAM}={quote(key)}" if key else url


# -- `python -m orchestrator ui` -----------------------------------------------------------------
def newest_link(client: MlflowClient, base: str, experiment: str | None) -> str:
    """The ready view of the newest sweep (of the experiment, or of the store), served at base."""
    from orchestrator.tracking.runs import latest_sweep

    sweep = latest_sweep(client, experiment)
    key = key_of(sweep.parent.info.run_id)
    saved = key if read(client, sweep.experiment_id, key) is not None else None  # sweeps before views
    return link(base, sweep.experiment_id, saved)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(tracking_uri: str, port: int, timeout_s: float = 120.0):
    """`mlflow ui` on a local store, on 127.0.0.1:port, once it answers; its process."""
    import subprocess
    import sys
    import urllib.request

    from orchestrator.errors import LookupProblem

    # In this command's process group: a terminal's Ctrl-C (or a kill of the group) stops it too.
    process = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
                                "--host", "127.0.0.1", "--port", str(port), "--workers", "1"])
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise LookupProblem(f"mlflow ui did not start on port {port} "
                                    f"(exit code {process.poll()}): see its output above") from None
            time.sleep(0.5)
