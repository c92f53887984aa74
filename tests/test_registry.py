"""report / promote / generate against a real MLflow store holding a sweep's runs and models."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from orchestrator.cli import main
from orchestrator.store import artifact_location
from trainers import gan
from trainers.models import gan as models


def log_sweep(uri: str, experiment: str, fids: dict[str, float], conditional: bool = False,
              without_model: tuple[str, ...] = ()) -> str:
    """A sweep as `sweep` leaves it: a parent run, one child per trial with metrics and models."""
    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    found = client.get_experiment_by_name(experiment)
    exp = found.experiment_id if found else client.create_experiment(
        experiment, artifact_location=artifact_location(uri, experiment))
    parent = client.create_run(exp, run_name=f"sweep {experiment}", tags={
        "gansweep.role": "sweep", "gansweep.metric": "fid", "gansweep.mode": "min"}).info.run_id
    config = gan.resolve("dcgan", {"ngf": 4, "ndf": 4, "noise_dim": 8, "conditional": conditional})
    for i, (name, fid) in enumerate(fids.items()):
        run = client.create_run(exp, run_name=name, tags={"mlflow.parentRunId": parent,
                                                          "gansweep.status": "finished"})
        run_id = run.info.run_id
        client.log_param(run_id, "lr", str(1e-4 * (i + 1)))
        client.log_metric(run_id, "fid", fid, step=3)
        client.log_metric(run_id, "inception_score", 10 - fid / 100, step=3)
        client.log_metric(run_id, "epoch", 3, step=3)
        if name not in without_model:
            generator, _ = models.build(config, channels=1, image_size=28, num_classes=3)
            with mlflow.start_run(run_id=run_id):
                mlflow.pytorch.log_model(generator.eval(), name="generator", serialization_format="pickle",
                                         pip_requirements=["torch"])
        client.set_terminated(run_id, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return parent


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """An empty, migrated MLflow database: creating one costs seconds, copying it nothing."""
    path = tmp_path_factory.mktemp("mlflow") / "empty.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path, template):
    import shutil

    shutil.copy(template, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


def cli(store: str, *args: str) -> int:
    return main([*args, "--tracking-uri", store])


def champion(store: str, name: str) -> str:
    return MlflowClient(store).get_model_version_by_alias(name, "champion").tags["run_name"]


def test_report_ranks_min_and_max(store, tmp_path, capsys):
    log_sweep(store, "exp", {"t001": 50.0, "t002": 20.0, "t003": 80.0})
    assert cli(store, "report", "exp", "--csv", str(tmp_path / "board.csv")) == 0
    out = capsys.readouterr().out
    assert out.index("t002") < out.index("t001") < out.index("t003")
    assert (tmp_path / "board.csv").read_text().splitlines()[1].startswith("1,t002,20.0")
    assert cli(store, "report", "--metric", "inception_score", "--mode", "max", "--top", "1") == 0
    out = capsys.readouterr().out
    assert "t002" in out and "t003" not in out


def test_promote_min_max_refuse_force_rollback_generate(store, tmp_path, capsys):
    log_sweep(store, "exp", {"t001": 50.0, "t002": 20.0, "t003": 80.0})
    assert cli(store, "promote", "exp") == 0
    assert champion(store, "exp-generator") == "t002"

    assert cli(store, "promote", "exp") == 1, "the same run is not better than itself"
    assert "at least as good" in capsys.readouterr().err
    assert cli(store, "promote", "exp", "--metric", "fid", "--mode", "max", "--force") == 0
    assert champion(store, "exp-generator") == "t003"
    client = MlflowClient(store)
    assert client.get_model_version_by_alias("exp-generator", "previous").tags["run_name"] == "t002"

    assert cli(store, "promote", "exp", "--rollback") == 0
    assert champion(store, "exp-generator") == "t002"

    out = tmp_path / "grid.png"
    assert cli(store, "generate", "models:/exp-generator@champion", "--n", "16", "--out", str(out)) == 0
    assert Image.open(out).size == (4 * 30 + 2, 4 * 30 + 2)  # 4x4 grid of 28 px, 2 px padding


def test_a_better_sweep_replaces_the_champion(store):
    log_sweep(store, "exp", {"t001": 50.0})
    assert cli(store, "promote", "exp") == 0
    log_sweep(store, "exp", {"t001": 30.0, "t002": 40.0})
    assert cli(store, "promote", "exp") == 0
    client = MlflowClient(store)
    assert str(client.get_model_version_by_alias("exp-generator", "champion").version) == "2"
    assert str(client.get_model_version_by_alias("exp-generator", "previous").version) == "1"


def test_generate_conditional_one_row_per_class(store, tmp_path):
    log_sweep(store, "cond", {"t001": 10.0}, conditional=True)
    assert cli(store, "promote", "cond") == 0
    out = tmp_path / "grid.png"
    assert cli(store, "generate", "models:/cond-generator@champion", "--n", "12", "--out", str(out)) == 0
    assert Image.open(out).size == (4 * 30 + 2, 3 * 30 + 2)  # 3 classes, a row of 4 each


def registry_state(store: str) -> list:
    return [(m.name, sorted(m.aliases.items())) for m in MlflowClient(store).search_registered_models()]


@pytest.mark.parametrize("args, message", [
    (("report", "nope"), "experiment 'nope' does not exist"),
    (("promote", "nope"), "experiment 'nope' does not exist"),
    (("promote", "exp", "--metric", "accuracy"), "has metric 'accuracy'"),
    (("report", "exp", "--metric", "accuracy"), "has metric 'accuracy'"),
    (("promote", "exp", "--name", "someone-elses"), "is not the generator of experiment 'exp'"),
])
def test_bad_input_leaves_the_registry_alone(store, capsys, args, message):
    log_sweep(store, "exp", {"t001": 50.0})
    MlflowClient(store).create_registered_model("someone-elses")
    before = registry_state(store)
    assert cli(store, *args) != 0
    assert message in capsys.readouterr().err
    assert registry_state(store) == before


def test_run_without_generator(store, capsys):
    log_sweep(store, "exp", {"t001": 50.0}, without_model=("t001",))
    assert cli(store, "promote", "exp") != 0
    assert "has a generator model" in capsys.readouterr().err
    assert registry_state(store) == []


def test_unreachable_tracking_server(capsys):
    assert main(["report", "--tracking-uri", "http://127.0.0.1:9"]) != 0
    assert "does not answer" in capsys.readouterr().err
