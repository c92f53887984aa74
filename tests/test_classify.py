"""Classifier, transfer and augment trainers on tiny data: they learn, freeze, resume and refuse bad input."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import torch
from recording import Recorder

from trainers import augment, catalog, classify, evaluator, gan, sources
from trainers import data as datasets
from trainers.__main__ import main
from trainers.checkpoint import load
from trainers.data import to_unit_range
from trainers.models.classifiers import TORCHVISION, Resize, build_classifier

CPU = torch.device("cpu")
LEARNS = {  # per arch: what lets it learn the shapes in a few seconds on a CPU
    "cnn": {"lr": 3e-3, "epochs": 4},
    "lenet5": {"lr": 3e-3, "epochs": 4},
    "alexnet": {"lr": 1e-4, "epochs": 4},  # learns for every seed tried (0-3); lr 1e-3 for 3 epochs did not
    "resnet18": {"max_train": 48, "batch_size": 8},
    "googlenet": {"max_train": 48, "batch_size": 8},
}
BATCH_NORM = ("resnet18", "googlenet")


@dataclass
class GanSources:
    checkpoint: Path  # of an unconditional DCGAN
    discriminator: str  # its MLflow model URIs
    generator: str
    conditional_generator: str


@pytest.fixture(scope="module")
def shapes16(shapes) -> dict:
    return {"dataset": "folder", "data_path": str(shapes), "channels": 1, "image_size": 16,
            "batch_size": 16, "epochs": 3, "device": "cpu"}


@pytest.fixture(scope="module")
def shapes28(shapes16) -> dict:
    """The size the GAN sources were trained at."""
    return {**shapes16, "image_size": 28, "epochs": 2, "lr": 3e-3}


@pytest.fixture(scope="module")
def gan_sources(tiny, tmp_path_factory) -> GanSources:
    """Two DCGANs of one epoch (one conditional), their models logged to a real local MLflow store."""
    root = tmp_path_factory.mktemp("gan-sources")
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluator, "STEPS", 20)  # its FID network is not under test here (own cache key)
        for name, conditional in (("plain", False), ("conditional", True)):
            runs[name] = Recorder(root / name)
            gan.train_dcgan({**tiny, "epochs": 1, "conditional": conditional}, runs[name])
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    experiment = mlflow.create_experiment("gan-sources", artifact_location=str(root / "artifacts"))
    ids = {}
    for name, conditional in (("plain", False), ("conditional", True)):
        state = load(runs[name].checkpoints[-1])["task"]
        models = gan.export_models("dcgan", {**tiny, "conditional": conditional}, state)
        with mlflow.start_run(experiment_id=experiment) as run:
            for role, model in models.items():  # pip_requirements: no inference subprocess (3 s a model)
                mlflow.pytorch.log_model(model, name=role, serialization_format="pickle",
                                         pip_requirements=["torch"])
        ids[name] = run.info.run_id
    yield GanSources(runs["plain"].checkpoints[-1], f"runs:/{ids['plain']}/discriminator",
                     f"runs:/{ids['plain']}/generator", f"runs:/{ids['conditional']}/generator")
    mlflow.set_tracking_uri(previous)


# -- classifier ------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", list(LEARNS))
def test_each_arch_learns_the_shapes(shapes16, tmp_path, arch):
    record = Recorder(tmp_path)
    config = {**shapes16, "arch": arch, **LEARNS[arch]}
    catalog.get("classifier").train(config, record)

    last = record.metrics[-1]
    assert [m["epoch"] for m in record.metrics] == list(range(1, config["epochs"] + 1))
    assert set(classify.METRICS) <= set(last)
    assert all("test_acc" not in m for m in record.metrics[:-1])  # the test set is looked at once
    assert all(math.isfinite(last[k]) for k in classify.METRICS)
    assert last["train_acc"] > 0.6  # three classes: chance is 1/3
    if arch not in BATCH_NORM:  # a few steps leave batch-norm running statistics unsettled for eval
        assert last["val_acc"] > 0.6
    assert (record.checkpoints[-1] / "confusion_matrix.png").stat().st_size > 0


def test_export_gives_the_trained_classifier(shapes16, tmp_path):
    record = Recorder(tmp_path)
    config = {**shapes16, "epochs": 1}
    spec = catalog.get("classifier")
    spec.train(config, record)
    model = spec.export(config, load(record.checkpoints[0])["task"])["classifier"]
    images, _ = datasets.load(spec.resolve(config), CPU).val.take(4)
    assert model.image_shape == (1, 16, 16)
    assert model(images).shape == (4, 3)


@pytest.mark.parametrize("arch", TORCHVISION)
def test_resize224_upsamples_inside_the_model(arch):
    model = build_classifier(arch, channels=1, image_size=16, num_classes=3, input="resize224").eval()
    assert isinstance(model[0], Resize) and model[0](torch.zeros(1, 1, 16, 16)).shape[-1] == 224
    with torch.no_grad():
        assert model(torch.randn(2, 1, 16, 16)).shape == (2, 3)


# -- transfer --------------------------------------------------------------------------------------
def _parts(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _changed(before: dict, after: dict) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


def test_frozen_epochs_train_the_head_only(gan_sources, shapes28, tmp_path):
    record = Recorder(tmp_path)
    config = {**shapes28, "source": str(gan_sources.checkpoint), "head": "mlp", "head_units": 16,
              "freeze_epochs": 2, "epochs": 3, "finetune_lr": 1e-3}
    catalog.get("transfer").train(config, record)

    source = sources.load_gan_model(str(gan_sources.checkpoint), "discriminator", "source").state_dict()
    source = {k: v for k, v in source.items() if not k.startswith("head.")}  # the real/fake head is gone
    states = [load(c)["task"]["model"] for c in record.checkpoints]
    backbones, heads = [_parts(s, "backbone.") for s in states], [_parts(s, "head.") for s in states]
    for frozen in backbones[:2]:  # weights and batch-norm statistics exactly as trained by the GAN
        assert frozen.keys() == source.keys()
        assert all(torch.equal(frozen[k], source[k]) for k in source)
    assert _changed(heads[0], heads[1])
    assert _changed(backbones[1], backbones[2]) and _changed(heads[1], heads[2])


def test_learning_rate_follows_finetune_lr_and_schedule(gan_sources, shapes28):
    config = classify.resolve("transfer", {**shapes28, "source": str(gan_sources.checkpoint), "epochs": 4,
                                           "freeze_epochs": 2, "lr": 1e-2, "finetune_lr": 1e-3,
                                           "lr_schedule": "step"})
    assert [classify.learning_rate(config, epoch) for epoch in (1, 2, 3, 4)] == pytest.approx(
        [1e-2, 1e-2, 1e-4, 1e-5])


def test_transfer_from_an_mlflow_model_uri(gan_sources, shapes28, tmp_path):
    by_uri = sources.load_gan_model(gan_sources.discriminator, "discriminator", "source").state_dict()
    by_path = sources.load_gan_model(str(gan_sources.checkpoint), "discriminator", "source").state_dict()
    assert all(torch.equal(by_uri[k], by_path[k]) for k in by_path)

    record = Recorder(tmp_path)
    config = {**shapes28, "source": gan_sources.discriminator, "freeze_epochs": 1, "epochs": 3}
    spec = catalog.get("transfer")
    spec.train(config, record)
    assert record.metrics[-1]["val_acc"] > 0.6 and "test_acc" in record.metrics[-1]
    model = spec.export(config, load(record.checkpoints[-1])["task"])["classifier"]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 3)


# -- augment ---------------------------------------------------------------------------------------
def test_gan_mode_adds_exactly_n_extra_labelled_images(gan_sources, shapes28, tmp_path):
    config = classify.resolve("augment", {**shapes28, "augment": "gan", "n_extra": 30,
                                          "generator": gan_sources.conditional_generator})
    data = datasets.load(config, CPU)
    real = data.train
    split = augment.training_set(config, data, CPU)

    assert len(split) == len(real) + 30
    assert torch.equal(split.images[:len(real)], real.images)
    assert torch.equal(split.labels[:len(real)], real.labels)
    extra, labels = split.images[len(real):], split.labels[len(real):]
    assert extra.shape == (30, 1, 28, 28) and extra.dtype == torch.uint8
    assert torch.bincount(labels, minlength=3).tolist() == [10, 10, 10]
    images = to_unit_range(extra)  # what the classifier is fed
    assert images.min() >= -1 and images.max() <= 1

    record = Recorder(tmp_path)
    catalog.get("augment").train({**config, "epochs": 1}, record)
    assert math.isfinite(record.metrics[0]["test_acc"])


def test_classic_mode_keeps_labels():
    size = 28
    images = torch.zeros(3, 1, size, size, dtype=torch.uint8)
    images[0, :, 11:17, 2:-2] = 230  # a bar, a column, a small box: told apart after any small turn
    images[1, :, 2:-2, 11:17] = 230
    images[2, :, 10:18, 10:18] = 230
    labels = torch.tensor([0, 1, 2])
    extra, extra_labels = augment.classic(images, labels, 60)

    assert extra.shape == (60, 1, size, size) and extra.dtype == torch.uint8
    nearest = torch.cdist(extra.flatten(1).float(), images.flatten(1).float()).argmin(1)
    assert torch.equal(extra_labels, labels[nearest])
    assert sum(not torch.equal(x, images[y]) for x, y in zip(extra, extra_labels, strict=True)) > 50


# -- resume ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("trainer, overrides", [
    ("classifier", {"lr_schedule": "cosine"}),
    ("transfer", {"freeze_epochs": 1}),  # the resumed epoch is the first unfrozen one
    ("augment", {"augment": "classic", "n_extra": 20, "lr_schedule": "step"}),
])
def test_resume_after_epoch_one_reproduces_epoch_two(gan_sources, shapes28, tmp_path, trainer, overrides):
    config = {**shapes28, **overrides, "deterministic": True}  # exact on a GPU too
    if trainer == "transfer":
        config["source"] = str(gan_sources.checkpoint)
    train = catalog.get(trainer).train
    straight = Recorder(tmp_path / "a")
    train(config, straight)
    interrupted = Recorder(tmp_path / "b", stop_after=1)
    with pytest.raises(KeyboardInterrupt):
        train(config, interrupted)
    resumed = Recorder(tmp_path / "c")
    train({**config, "resume_from": str(interrupted.checkpoints[0])}, resumed)

    assert [m["epoch"] for m in resumed.metrics] == [2]
    expected = {k: v for k, v in straight.metrics[1].items() if k != "epoch_time_s"}
    got = {k: v for k, v in resumed.metrics[0].items() if k != "epoch_time_s"}
    assert got == pytest.approx(expected, rel=1e-6)


# -- bad input -------------------------------------------------------------------------------------
def _args(config: dict) -> list[str]:
    return [arg for key, value in config.items() for arg in ("--set", f"{key}={value}")]


@pytest.mark.parametrize("trainer, overrides, message", [
    ("transfer", {"source": "/no/such/run/checkpoints/epoch_003"}, "does not exist"),
    ("transfer", {"source": "runs:/0123456789abcdef/discriminator"}, "cannot load it as an MLflow"),
    ("transfer", {"source": "{checkpoint}", "image_size": 32},
     "is a discriminator of 1x28x28 images (channels x size x size), but dataset='folder' gives 1x32x32"),
    ("transfer", {"source": "{generator}"}, "is a Generator, not a discriminator"),
    ("transfer", {"source": "{checkpoint}", "freeze_epochs": 5, "epochs": 2},
     "freeze_epochs=5 is larger than epochs=2"),
    ("transfer", {}, "transfer needs source"),
    ("augment", {"augment": "gan", "generator": "{generator}"}, "is not conditional"),
    ("augment", {"augment": "gan", "generator": "{discriminator}"}, "is a Discriminator, not a generator"),
    ("classifier", {"arch": "vgg"}, "arch='vgg' is not one of: cnn, lenet5, alexnet, resnet18, googlenet"),
    ("classifier", {"arch": "lenet5", "input": "resize224"}, "input='resize224' is only for alexnet"),
    ("classifier", {"arch": "cnn", "image_size": 8}, "image_size=8 is too small for arch=cnn"),
])
def test_bad_input_is_named(gan_sources, shapes28, capsys, tmp_path, trainer, overrides, message):
    names = {"checkpoint": str(gan_sources.checkpoint), "generator": gan_sources.generator,
             "discriminator": gan_sources.discriminator}
    config = {**shapes28, **({"freeze_epochs": 1} if trainer == "transfer" else {}),
              **{k: str(v).format(**names) for k, v in overrides.items()}}
    out = tmp_path / "out"
    code = main([trainer, *_args(config), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists(), "nothing may be written for bad input"
