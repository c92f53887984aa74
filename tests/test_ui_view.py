"""The sweep's ready view in MLflow's UI: the experiment tag a sweep writes when it starts, read back
from a real MLflow store as the UI (3.17) decodes it, and the link the closing message prints."""

from __future__ import annotations

import json
import time

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.space.loading import load_space
from orchestrator.tracking import parent_run, summary, ui_view


@pytest.fixture(autouse=True)
def no_default_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(None)
    yield
    assert not (tmp_path / "mlflow.db").exists(), "an MLflow call used the process-wide tracking URI"


def space_file(tmp_path, trainer: str, metric: str, mode: str):
    path = tmp_path / f"{trainer}.yaml"
    path.write_text(yaml.safe_dump({
        "name": "exp", "trainer": trainer, "metric": metric, "mode": mode, "num_samples": 2,
        "max_concurrent": 1, "resources": {"cpu": 1}, "sampler": {"type": "tpe", "seed": 0},
        "scheduler": {"type": "fifo"}, "fixed": {"epochs": 3},
        "params": {"lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
                   "beta1": {"type": "float", "low": 0.0, "high": 0.9},
                   "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]}}}))
    return load_space(path)


def started(tmp_path, trainer: str, metric: str, mode: str):
    """A sweep's experiment and parent run, created as `sweep` creates them, in a real store."""
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    (tmp_path / "store").mkdir(exist_ok=True)
    space = space_file(tmp_path, trainer, metric, mode)
    client = MlflowClient(uri)
    experiment = parent_run.experiment_id(client, uri, space.name)
    parent = parent_run.start(client, experiment, space, str(tmp_path / "sweeps"), "exp-1", {}, {})
    return uri, client, experiment, parent, space


@pytest.mark.parametrize("trainer, metric, mode, compared", [
    ("dcgan", "fid", "min",
     ["fid", "kid", "inception_score", "d_f1", "g_loss", "d_loss", "sample_diversity"]),
    ("classifier", "val_acc", "max", ["val_acc", "test_acc", "val_loss"]),
])
def test_a_sweep_writes_its_view_when_it_starts(tmp_path, trainer, metric, mode, compared):
    _, client, experiment, parent, _ = started(tmp_path, trainer, metric, mode)
    tag = client.get_experiment(experiment).tags[f"mlflow.sharedViewState.gansweep-{parent}"]
    saved = json.loads(tag)  # the envelope the UI's "Save as new view" writes, listed by name
    assert set(saved) == {"name", "createdAt", "updatedAt", "state"}
    assert saved["name"] == f"sweep exp-1: {metric}" and isinstance(saved["createdAt"], int)
    view = json.loads(saved["state"])
    assert view["selectedColumns"] == [
        *(f"metrics.`{m}`" for m in compared), "params.`beta1`", "params.`lr`", "params.`optimizer`",
        "metrics.`epoch`", "tags.`gansweep.status`"]
    assert (view["orderByKey"], view["orderByAsc"]) == (f"metrics.`{metric}`", mode == "min")
    assert view["searchFilter"] == f"tags.`mlflow.parentRunId` = '{parent}'", "this sweep's trials only"

    charts = {c["type"]: c for c in view["compareRunCharts"]}
    assert charts["LINE"]["metricKey"] == metric and charts["LINE"]["xAxisKey"] == "step"
    assert charts["PARALLEL"]["selectedParams"] == ["beta1", "lr", "optimizer"]
    assert charts["PARALLEL"]["selectedMetrics"] == [metric]
    if trainer == "dcgan":
        assert charts["IMAGE"]["imageKeys"] == ["samples"]
    else:
        assert "IMAGE" not in charts, "a classifier logs no sample grids"
    sections = {s["uuid"] for s in view["compareRunSections"]}
    assert {c["metricSectionId"] for c in view["compareRunCharts"]} <= sections
    assert ui_view.read(client, experiment, ui_view.key_of(parent)) == view


def test_the_closing_message_links_the_view(tmp_path, capsys):
    uri, client, experiment, parent, space = started(tmp_path, "dcgan", "fid", "min")
    run = client.create_run(experiment, run_name="t001", tags={"mlflow.parentRunId": parent})
    client.log_metric(run.info.run_id, "fid", 40.0, step=1)
    client.set_terminated(run.info.run_id)
    summary.finish(client, experiment, parent, space, uri)
    out = capsys.readouterr().out
    link = (f"http://127.0.0.1:5000/#/experiments/{experiment}/runs?workflowType=machine_learning"
            f"&viewStateShareKey=gansweep-{parent}")
    assert f"mlflow ui --backend-store-uri {uri}\n  then {link}\n" in out
    assert "orderByKey" not in out


def test_a_sweep_without_a_view_gets_one_at_its_end(tmp_path, capsys):
    """A sweep begun before views (resumed now) still ends with a working link."""
    uri, client, experiment, parent, space = started(tmp_path, "dcgan", "fid", "min")
    client.delete_experiment_tag(experiment, f"mlflow.sharedViewState.gansweep-{parent}")
    summary.finish(client, experiment, parent, space, uri)
    assert ui_view.read(client, experiment, ui_view.key_of(parent))["orderByKey"] == "metrics.`fid`"
    assert f"viewStateShareKey=gansweep-{parent}" in capsys.readouterr().out


@pytest.mark.slow  # starts `mlflow ui`
def test_ui_serves_the_store_and_prints_the_newest_sweeps_view(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    uri, client, experiment, parent, _ = started(tmp_path, "dcgan", "fid", "min")
    ui = subprocess.Popen([sys.executable, "-m", "orchestrator", "ui", "--tracking-uri", uri],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        said = []
        while not any(line.startswith("Runs, curves") for line in said):
            line = ui.stdout.readline()
            assert line, "".join(said)[-3000:]
            said.append(line)
        link = said[-1].split(": ", 1)[1].strip()
        base = link.split("/#/")[0]
        assert link == (f"{base}/#/experiments/{experiment}/runs?workflowType=machine_learning"
                        f"&viewStateShareKey=gansweep-{parent}")
        with urllib.request.urlopen(f"{base}/", timeout=10) as page:
            assert page.status == 200 and "<title>MLflow" in page.read().decode()
        api = f"{base}/api/2.0/mlflow/experiments/get?experiment_id={experiment}"
        with urllib.request.urlopen(api, timeout=10) as answer:
            served = {t["key"] for t in json.load(answer)["experiment"]["tags"]}
        assert f"mlflow.sharedViewState.gansweep-{parent}" in served, "the UI reads the view from there"
    finally:
        os.killpg(ui.pid, signal.SIGTERM)  # the command and the mlflow ui it started, nothing else
        ui.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and group_alive(ui.pid):
        time.sleep(0.5)
    assert not group_alive(ui.pid), "the mlflow ui it started is stopped with it"


def group_alive(pgid: int) -> bool:
    import os

    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
