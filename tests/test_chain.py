"""Chained experiments through the CLI (report 000 section 3.3, report 002): a GAN sweep, `promote`,
then a transfer sweep from the champion's discriminator and an augment sweep from a conditional
generator. Sources are looked up on the driver, copied into the sweep's storage, and recorded."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.cli import main

pytestmark = [pytest.mark.sweep, pytest.mark.slow]


def space_file(folder: Path, name: str, trainer: str, metric: str, mode: str, fixed: dict,
               params: dict | None = None) -> Path:
    space = {"name": name, "trainer": trainer, "metric": metric, "mode": mode, "max_concurrent": 2,
             "resources": {"cpu": 1}, "sampler": {"type": "grid", "seed": 0}, "scheduler": {"type": "fifo"},
             "max_failures": 1, "fixed": fixed,
             "params": params or {"lr": {"type": "categorical", "choices": [1e-3]}}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def classifier_data(tiny: dict) -> dict:
    return {k: tiny[k] for k in ("dataset", "data_path", "channels", "image_size", "batch_size")} | {
        "max_train": 96, "epochs": 2}


def saved_discriminator(folder: Path) -> Path:
    """An untrained DCGAN discriminator of 1x28x28 images, saved as an MLflow model folder."""
    from trainers import gan
    from trainers.models import gan as models

    config = gan.resolve("dcgan", {"ngf": 4, "ndf": 4, "noise_dim": 8})
    _, discriminator = models.build(config, channels=1, image_size=28, num_classes=3)
    mlflow.pytorch.save_model(discriminator, str(folder), serialization_format="pickle",
                              pip_requirements=["torch"])
    return folder


def trial_runs(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id])
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


@pytest.fixture
def store_kind() -> str:
    return "sqlite"


@pytest.fixture
def chain(tmp_path, tiny, ray_address, monkeypatch, request, store_kind):
    """Runs `python -m orchestrator ...` commands from a working folder that is not the store's:
    a sqlite store in another folder, or the tracking server (PostgreSQL, artifacts proxied to S3)."""
    work, spaces = tmp_path / "work", tmp_path / "spaces"
    work.mkdir()
    spaces.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if store_kind == "server":
        uri = request.getfixturevalue("server").url
    else:
        uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    common = ["--tracking-uri", uri]

    def sweep(space: Path, *extra: str) -> int:
        mlflow.set_tracking_uri(None)  # each command a new process: nothing set by the one before
        return main(["sweep", str(space), "--address", ray_address, "--storage", str(tmp_path / "sweeps"),
                     *common, *extra])

    def command(*args: str) -> int:
        mlflow.set_tracking_uri(None)
        return main([*args, *common])

    return sweep, command, MlflowClient(uri), spaces, work


@pytest.mark.parametrize("store_kind", ["sqlite", pytest.param("server", marks=pytest.mark.server)])
def test_gan_then_transfer_from_the_champion_then_augment(chain, tiny, capsys):
    sweep, command, client, spaces, work = chain
    gan = {**tiny, "epochs": 1}
    assert sweep(space_file(spaces, "chain-gan", "dcgan", "fid", "min", gan)) == 0
    assert command("promote", "chain-gan") == 0
    assert sweep(space_file(spaces, "chain-cgan", "dcgan", "fid", "min", {**gan, "conditional": True})) == 0
    assert command("promote", "chain-cgan") == 0
    capsys.readouterr()

    data = classifier_data(tiny)
    transfer = space_file(spaces, "chain-transfer", "transfer", "val_acc", "max",
                          {**data, "source": "runs:/not-a-run/discriminator", "freeze_epochs": 1},
                          {"head": {"type": "categorical", "choices": ["linear", "mlp"]}})
    assert sweep(transfer, "--set", "source={champion: chain-gan-generator, part: discriminator}") == 0
    augment = space_file(spaces, "chain-augment", "augment", "val_acc", "max",
                         {**data, "arch": "lenet5", "augment": "gan", "n_extra": 30,
                          "generator": "models:/chain-cgan-generator@champion"})
    assert sweep(augment) == 0

    champion = client.get_model_version_by_alias("chain-gan-generator", "champion")
    runs = trial_runs(client, "chain-transfer")
    assert len(runs) == 2
    for run in runs:
        assert run.data.tags["gansweep.status"] == "finished", run.data.tags.get("gansweep.error")
        assert run.data.tags["gansweep.source.source"] == (
            "{champion: chain-gan-generator, part: discriminator}")
        resolved = run.data.tags["gansweep.source.source.resolved"]
        assert f"version {champion.version}, run {champion.run_id}, its discriminator" in resolved
        assert "test_acc" in run.data.metrics
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.data.tags["gansweep.overrides"] == (
        '{"source": {"champion": "chain-gan-generator", "part": "discriminator"}}')
    effective = yaml.safe_load(Path(client.download_artifacts(parent.info.run_id, "effective_space.yaml"))
                               .read_text())
    assert effective["fixed"]["source"] == {"champion": "chain-gan-generator", "part": "discriminator"}

    (augmented,) = trial_runs(client, "chain-augment")
    assert augmented.data.tags["gansweep.status"] == "finished", augmented.data.tags.get("gansweep.error")
    cgan = client.get_model_version_by_alias("chain-cgan-generator", "champion")
    assert augmented.data.tags["gansweep.source.generator.resolved"] == (
        f"chain-cgan-generator version {cgan.version}, run {cgan.run_id}")
    assert not (work / "mlflow.db").exists(), "every command used the --tracking-uri it was given"


@pytest.mark.parametrize("source, message", [
    ("runs:/0123456789abcdef/discriminator", "not found in"),
    ("{champion: chain-misspelt-generator, part: discriminator}",
     "no registered model 'chain-misspelt-generator'"),
    ("models:/chain-misspelt-generator/3", "not found in"),
])
def test_a_missing_source_stops_the_sweep_before_ray(chain, tiny, capsys, tmp_path, source, message):
    sweep, command, client, spaces, _ = chain
    client.search_experiments()  # the store exists, the source does not
    transfer = space_file(spaces, "chain-missing", "transfer", "val_acc", "max",
                          {**classifier_data(tiny), "source": "runs:/x/discriminator", "freeze_epochs": 1})
    assert sweep(transfer, "--set", f"source={source}") == 2
    err = capsys.readouterr().err
    assert f"--set source: {source}: {message}" in err
    assert err.count("\n") == 1, "one line, no traceback"
    assert client.get_experiment_by_name("chain-missing") is None, "no experiment, no run"
    assert not (tmp_path / "sweeps").exists(), "nothing written to the storage"


def test_a_config_error_in_a_trial_is_not_retried(chain, tiny, tmp_path, capsys):
    """A discriminator of 28x28 images for a 32x32 dataset: the trial finds out when it builds its
    model; retrying would fail the same way, so it fails once, with the trainer's message."""
    sweep, _, client, spaces, _ = chain
    folder = saved_discriminator(tmp_path / "discriminator")
    transfer = space_file(spaces, "chain-config-error", "transfer", "val_acc", "max",
                          {**classifier_data(tiny), "image_size": 32, "source": str(folder),
                           "freeze_epochs": 1})
    assert sweep(transfer) == 0, "a failed trial does not fail the sweep"

    (run,) = trial_runs(client, "chain-config-error")
    assert run.info.status == "FAILED"
    assert run.data.tags["gansweep.status"] == "failed"
    assert "is a discriminator of 1x28x28 images" in run.data.tags["gansweep.error"]
    assert "gansweep.retries" not in run.data.tags, "one attempt"
    err = capsys.readouterr().err
    assert err.count("failed, not retried: source=") == 1
    assert "retrying" not in err and "Traceback" not in err
