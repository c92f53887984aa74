"""report / promote / generate against a real MLflow store holding a sweep's runs and models, and
the closing message of a sweep. Each test runs in an empty working folder with no process-wide
tracking URI: an MLflow call that fell back to it would leave ./mlflow.db there."""

from __future__ import annotations

import mlflow
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from orchestrator.cli import main
from orchestrator.registry import stored_models
from orchestrator.space.loading import load_space
from orchestrator.tracking import summary
from orchestrator.tracking.mlflow_store import artifact_location
from trainers import catalog, gan
from trainers.models import gan as models


@pytest.fixture(autouse=True)
def no_default_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(None)  # a sweep or another test may have set it in this process
    yield
    assert not (tmp_path / "mlflow.db").exists(), "an MLflow call used the process-wide tracking URI"


def is_gan(trainer: str) -> bool:
    return catalog.get(trainer).promoted == "generator"


def metrics_of(trainer: str, score: float) -> dict[str, float]:
    if is_gan(trainer):
        return {"fid": score, "inception_score": 10 - score / 100}
    return {"val_acc": score, "test_acc": score - 0.05}


def log_sweep(uri: str, experiment: str, scores: dict[str, float], conditional: bool = False,
              without_model: tuple[str, ...] = (), trainer: str = "dcgan",
              no_test_acc: tuple[str, ...] = (), with_samples: tuple[str, ...] = (),
              collapsed: tuple[str, ...] = ()) -> str:
    """A sweep as `sweep` leaves it: a parent run, one child per trial with metrics and its model
    (a generator, or a classifier: the trainer decides, as it does for a real sweep)."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    exp = found.experiment_id if found else client.create_experiment(
        experiment, artifact_location=artifact_location(uri, experiment))
    gan_sweep = is_gan(trainer)
    metric, mode = ("fid", "min") if gan_sweep else ("val_acc", "max")
    parent = client.create_run(exp, run_name=f"sweep {experiment}", tags={
        "gansweep.role": "sweep", "gansweep.metric": metric, "gansweep.mode": mode,
        "gansweep.trainer": trainer}).info.run_id
    config = gan.resolve("dcgan", {"ngf": 4, "ndf": 4, "noise_dim": 8, "conditional": conditional})
    for i, (name, score) in enumerate(scores.items()):
        status = "collapsed" if name in collapsed else "finished"
        run = client.create_run(exp, run_name=name, tags={"mlflow.parentRunId": parent,
                                                          "gansweep.status": status})
        run_id = run.info.run_id
        client.log_param(run_id, "lr", str(1e-4 * (i + 1)))
        client.log_param(run_id, "conditional", str(conditional))
        for key, value in metrics_of(trainer, score).items():
            if not (key == "test_acc" and name in no_test_acc):
                client.log_metric(run_id, key, value, step=3)
        client.log_metric(run_id, "epoch", 3, step=3)
        if name in with_samples:  # as the tracking callback leaves them: one grid per epoch
            for epoch in (1, 2, 3):
                client.log_text(run_id, "png", f"samples/epoch_{epoch:03d}.png")
        if name not in without_model:
            model = (models.build(config, channels=1, image_size=28, num_classes=3)[0] if gan_sweep
                     else torch.nn.Linear(4, 3))
            log_model(uri, run_id, model.eval(), "generator" if gan_sweep else "classifier")
        client.set_terminated(run_id, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return parent


def log_model(uri: str, run_id: str, model: torch.nn.Module, name: str) -> None:
    """As the sweep's tracking callback logs it: through the fluent API, which needs the
    process-wide URI (set only for the call here)."""
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(run_id=run_id):
            mlflow.pytorch.log_model(model, name=name, serialization_format="pickle",
                                     pip_requirements=["torch"])
    finally:
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """An empty, migrated MLflow database: creating one costs seconds, copying it nothing."""
    path = tmp_path_factory.mktemp("mlflow") / "empty.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path, template):
    """A store outside the working folder, as --tracking-uri names one."""
    import shutil

    (tmp_path / "store").mkdir()
    shutil.copy(template, tmp_path / "store" / "mlflow.db")
    return f"sqlite:///{tmp_path}/store/mlflow.db"


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


def test_a_collapsed_trial_is_ranked_last_and_never_promoted(store, capsys):
    """Its FID can be the lowest (one repeated digit, judged early), but it draws one picture."""
    log_sweep(store, "exp", {"t001": 50.0, "t002": 20.0, "t003": 80.0}, collapsed=("t002",))
    assert cli(store, "report", "exp") == 0
    out = capsys.readouterr().out
    assert out.index("t001") < out.index("t003") < out.index("t002")
    assert cli(store, "promote", "exp") == 0
    assert "not promoting t002: collapsed" in capsys.readouterr().out
    assert champion(store, "exp-generator") == "t001"


def test_promote_min_max_refuse_force_rollback_generate(store, tmp_path, capsys):
    log_sweep(store, "exp", {"t001": 50.0, "t002": 20.0, "t003": 80.0})
    assert cli(store, "promote", "exp") == 0
    assert champion(store, "exp-generator") == "t002"
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3].startswith("promoted t002 (fid 20) as exp-generator version 1 @champion")
    assert lines[-2:] == [
        f"sample from it: python -m orchestrator generate models:/exp-generator@champion --out grid.png "
        f"--tracking-uri {store}",
        "train a classifier from its discriminator: python -m orchestrator sweep "
        'search_spaces/transfer_freeze_mnist.yaml --set "source={champion: exp-generator, part: '
        f'discriminator}}" --tracking-uri {store}']

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


def test_the_promoted_version_says_why(store):
    parent = log_sweep(store, "exp", {"t001": 50.0, "t002": 20.0}, with_samples=("t001", "t002"))
    assert cli(store, "promote", "exp") == 0
    client = MlflowClient(store)
    version = client.get_model_version_by_alias("exp-generator", "champion")
    run_id = version.run_id
    assert {k: version.tags[k] for k in ("metric", "metric_value", "mode", "sweep_run_id", "sweep_run_name",
                                         "run_name", "samples")} == {
        "metric": "fid", "metric_value": "20.0", "mode": "min", "sweep_run_id": parent,
        "sweep_run_name": "sweep exp", "run_name": "t002", "samples": f"runs:/{run_id}/samples/epoch_003.png"}
    assert version.description.splitlines() == [
        "**fid 20** (lower is better): the best finished trial of its sweep by fid.", "",
        f"- sweep: `sweep exp` (run `{parent}`), experiment `exp`",
        f"- trial: `t002` (run `{run_id}`)",
        "- params: lr=0.0002",
        f"- sample grid of its last epoch: `runs:/{run_id}/samples/epoch_003.png`"]
    assert client.get_registered_model("exp-generator").latest_versions[0].description == version.description


def test_a_better_sweep_replaces_the_champion(store):
    log_sweep(store, "exp", {"t001": 50.0})
    assert cli(store, "promote", "exp") == 0
    log_sweep(store, "exp", {"t001": 30.0, "t002": 40.0})
    assert cli(store, "promote", "exp") == 0
    client = MlflowClient(store)
    assert str(client.get_model_version_by_alias("exp-generator", "champion").version) == "2"
    assert str(client.get_model_version_by_alias("exp-generator", "previous").version) == "1"


def test_generate_conditional_one_row_per_class(store, tmp_path, capsys):
    log_sweep(store, "cond", {"t001": 10.0}, conditional=True)
    assert cli(store, "promote", "cond") == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "augment a classifier's training data with it: python -m orchestrator sweep "
        "search_spaces/augment_cifar10.yaml --set generator=models:/cond-generator@champion "
        f"--tracking-uri {store}")
    run_id = MlflowClient(store).get_model_version("cond-generator", "1").run_id
    uris = ("models:/cond-generator@champion", "models:/cond-generator/1", f"runs:/{run_id}/generator")
    for i, uri in enumerate(uris):
        out = tmp_path / f"grid{i}.png"
        assert cli(store, "generate", uri, "--n", "12", "--out", str(out)) == 0
        assert Image.open(out).size == (4 * 30 + 2, 3 * 30 + 2)  # 3 classes, a row of 4 each


def test_generate_in_a_pipe_prints_one_line(store, tmp_path):
    """No download progress bar (dozens of lines in a pipe or a log): the command's own line."""
    import subprocess
    import sys

    log_sweep(store, "piped", {"t001": 10.0})
    assert cli(store, "promote", "piped") == 0
    out = tmp_path / "grid.png"
    model = "models:/piped-generator@champion"
    done = subprocess.run([sys.executable, "-m", "orchestrator", "generate", model,
                           "--n", "4", "--out", str(out), "--tracking-uri", store],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (done.stdout + done.stderr).splitlines() == [
        f"wrote {out}: 4 samples of 28x28 from models:/piped-generator@champion"]


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


def test_promote_a_classifier_sweep(store, tmp_path, capsys):
    log_sweep(store, "cls", {"t001": 0.8, "t002": 0.9}, trainer="classifier")
    assert cli(store, "promote", "cls") == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["promoted t002 (val_acc 0.9) as cls-classifier version 1 @champion"]
    client = MlflowClient(store)
    version = client.get_model_version_by_alias("cls-classifier", "champion")
    [logged] = client.search_logged_models([logged_in(client, "cls")],
                                           filter_string=f"source_run_id = '{version.run_id}'")
    assert (logged.name, version.tags["run_name"]) == ("classifier", "t002")
    assert client.get_model_version_download_uri("cls-classifier", "1") == logged.artifact_location
    assert '"name": "cls-classifier", "version": "1"' in logged.tags["mlflow.modelVersions"]
    local = stored_models.download(client, "models:/cls-classifier@champion", tmp_path / "model")
    assert isinstance(mlflow.pytorch.load_model(str(local)), torch.nn.Linear)

    assert cli(store, "promote", "cls", "--force") == 0
    assert cli(store, "promote", "cls", "--rollback") == 0, "the experiment alone names cls-classifier"
    assert str(client.get_model_version_by_alias("cls-classifier", "champion").version) == "1"


def test_report_shows_test_acc_beside_val_acc(store, capsys):
    log_sweep(store, "cls", {"t001": 0.8, "t002": 0.9}, trainer="classifier", no_test_acc=("t001",))
    assert cli(store, "report", "cls") == 0
    header, best, other = capsys.readouterr().out.splitlines()[1:4]
    assert header.split()[:4] == ["rank", "run", "val_acc", "test_acc"]
    assert best.split()[1:4] == ["t002", "0.9", f"{metrics_of('classifier', 0.9)['test_acc']:.4g}"]
    assert other.split()[1:4] == ["t001", "0.8", "nan"], "stopped before its last epoch: no test_acc"


def logged_in(client: MlflowClient, experiment: str) -> str:
    return client.get_experiment_by_name(experiment).experiment_id


TRANSFER = {"transfer": {"source": "runs:/0123456789abcdef/discriminator"}}  # never looked up here


def write_space(tmp_path, trainer: str) -> object:
    metric, mode = ("fid", "min") if is_gan(trainer) else ("val_acc", "max")
    path = tmp_path / f"{trainer}.yaml"
    path.write_text(yaml.safe_dump({
        "name": "exp", "trainer": trainer, "metric": metric, "mode": mode, "num_samples": 2,
        "max_concurrent": 1, "resources": {"cpu": 1}, "sampler": {"type": "random", "seed": 0},
        "scheduler": {"type": "fifo"}, "fixed": {"epochs": 3, **TRANSFER.get(trainer, {})},
        "params": {"lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}}}))
    return load_space(path)


@pytest.mark.parametrize("trainer, scores, best, next_step", [
    ("dcgan", {"t001": 50.0, "t002": 20.0}, "t002: fid 20 ", "Promote the best generator: "),
    ("classifier", {"t001": 0.8, "t002": 0.9}, "t002: val_acc 0.9, test_acc 0.85 ",
     "Register the best classifier as exp-classifier: "),
    ("transfer", {"t001": 0.9, "t002": 0.8}, "t001: val_acc 0.9, test_acc n/a ",
     "Register the best classifier as exp-classifier: "),
])
def test_the_closing_message_fits_the_trainer(store, tmp_path, capsys, trainer, scores, best, next_step):
    space = write_space(tmp_path, trainer)
    parent = log_sweep(store, "exp", scores, trainer=trainer, no_test_acc=("t001",))
    client = MlflowClient(store)
    summary.finish(client, logged_in(client, "exp"), parent, space, store)
    out = capsys.readouterr().out
    assert f"\nBest trial: {best}(MLflow run " in out
    assert f"{next_step}python -m orchestrator promote exp --tracking-uri {store}\n" in out


@pytest.mark.parametrize("args", [("report",), ("promote", "exp"), ("promote", "exp", "--rollback"),
                                  ("generate", "models:/exp-generator@champion")])
def test_commands_that_read_create_no_store(tmp_path, capsys, args):
    database = tmp_path / "nowhere" / "mlflow.db"
    assert main([*args, "--tracking-uri", f"sqlite:///{database}"]) == 1
    assert f"error: there is no tracking store {database}: run a sweep first" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()
    assert main(list(args)) == 1, "nor ./mlflow.db, the default store"
    assert f"there is no tracking store {tmp_path / 'mlflow.db'}" in capsys.readouterr().err
