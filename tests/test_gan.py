"""GAN trainers on tiny data: every loss trains, resume is exact, metrics can fail, bad input is named."""

from __future__ import annotations

import math

import pytest
import torch
from recording import Recorder

from trainers import catalog, gan
from trainers.checkpoint import load
from trainers.loop import Diverged
from trainers.models import gan as models


@pytest.mark.parametrize("trainer", ["dcgan", "mlp_gan"])
@pytest.mark.parametrize("loss", ["bce", "lsgan", "wgan-gp", "hinge"])
def test_every_loss_trains_two_epochs(tiny, tiny_mlp, tmp_path, trainer, loss):
    record = Recorder(tmp_path)
    catalog.get(trainer).train({**(tiny if trainer == "dcgan" else tiny_mlp), "loss": loss}, record)

    assert [m["epoch"] for m in record.metrics] == [1, 2]
    for metrics in record.metrics:
        assert set(gan.METRICS) <= set(metrics)
        assert all(math.isfinite(metrics[k]) for k in gan.METRICS)
        assert 0.0 <= metrics["d_acc"] <= 1.0 and metrics["sample_diversity"] >= 0.0
    assert (record.checkpoints[-1] / "samples.png").stat().st_size > 0
    state = load(record.checkpoints[-1])
    assert state["epoch"] == 2 and {"generator", "discriminator", "opt_g", "opt_d"} <= set(state["task"])


def test_resume_after_epoch_one_reproduces_epoch_two(tiny, tmp_path):
    # deterministic: exact on a GPU too (cuDNN's autotuner may pick other kernels after a resume)
    config = {**tiny, "d_dropout": 0.2, "instance_noise": 0.1, "deterministic": True}
    straight = Recorder(tmp_path / "a")
    gan.train_dcgan(config, straight)

    interrupted = Recorder(tmp_path / "b", stop_after=1)
    with pytest.raises(KeyboardInterrupt):
        gan.train_dcgan(config, interrupted)
    resumed = Recorder(tmp_path / "c")
    gan.train_dcgan({**config, "resume_from": str(interrupted.checkpoints[0])}, resumed)

    assert [m["epoch"] for m in resumed.metrics] == [2]
    timing = {"epoch_time_s", "images_per_s"}
    expected = {k: v for k, v in straight.metrics[1].items() if k not in timing}
    got = {k: v for k, v in resumed.metrics[0].items() if k not in timing}
    assert got == pytest.approx(expected, rel=1e-6)


def test_nan_loss_stops_with_a_reason(tiny, tmp_path):
    record = Recorder(tmp_path)
    with pytest.raises(Diverged, match="became nan"):
        gan.train_dcgan({**tiny, "loss": "lsgan", "lr": 1e30, "optimizer": "sgd"}, record)
    assert record.metrics[-1]["diverged"] == 1
    assert "learning rate" in record.metrics[-1]["stop_reason"]


def test_conditional_generator_follows_labels(tiny):
    config = gan.resolve("dcgan", {**tiny, "conditional": True})
    generator, discriminator = models.build(config, channels=1, image_size=28, num_classes=3)
    noise = torch.randn(6, config["noise_dim"])
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    images = generator(noise, labels)
    assert images.shape == (6, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1
    # same noise, other classes: other images; same class: same image
    assert not torch.allclose(images, generator(noise, (labels + 1) % 3))
    generator.eval()
    assert torch.allclose(generator(noise[:1], labels[:1]), generator(noise[:1], labels[:1]))
    assert discriminator(images, labels).shape == (6,)
    with pytest.raises(ValueError, match="conditional"):
        generator(noise)


def test_conditional_training_reports_and_draws_one_row_per_class(tiny, tmp_path):
    record = Recorder(tmp_path)
    gan.train_dcgan({**tiny, "conditional": True, "epochs": 1}, record)
    assert math.isfinite(record.metrics[0]["fid"])
    from PIL import Image

    width, height = Image.open(record.checkpoints[0] / "samples.png").size
    # 16 samples in rows of 3 classes -> 6 rows of 28 px (+2 px padding each)
    assert (width, height) == (3 * 30 + 2, 6 * 30 + 2)


@pytest.mark.parametrize("size", [28, 32, 64, 128])
def test_dcgan_sizes(size):
    config = gan.resolve("dcgan", {"ngf": 4, "ndf": 4, "image_size": size})
    generator, discriminator = models.build(config, channels=3, image_size=size, num_classes=10)
    images = generator(torch.randn(2, config["noise_dim"]))
    assert images.shape == (2, 3, size, size)
    assert discriminator(images).shape == (2,)


def test_large_folders_stream_through_a_dataloader(tiny, tmp_path, monkeypatch):
    from trainers import data

    monkeypatch.setattr(data, "IN_MEMORY_BYTES", 0)  # every folder counts as large
    loaded = data.load(gan.resolve("dcgan", tiny), torch.device("cpu"))
    assert isinstance(loaded.train, data.StreamingSplit)
    assert loaded.train.loader.num_workers == data.loader_workers() and loaded.train.loader.persistent_workers
    images, labels = next(loaded.train.batches(8, shuffle=True))
    assert images.shape == (8, 1, 28, 28) and images.min() >= -1 and images.max() <= 1
    record = Recorder(tmp_path)
    gan.train_dcgan({**tiny, "epochs": 1}, record)
    assert math.isfinite(record.metrics[0]["fid"])


@pytest.mark.parametrize("overrides", [{"loss": "bce"}, {"loss": "wgan-gp", "n_critic": 3}])
def test_generator_runs_once_per_batch(tiny, overrides):
    """The G step reuses the D step's fakes: G's batch-norm statistics move once per batch, not twice."""
    task = gan.GanTask(gan.resolve("dcgan", {**tiny, **overrides, "max_train": None}))
    norms = [m for m in task.generator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    batches = len(task.data.train) // tiny["batch_size"]
    metrics = task.train_epoch(1)
    assert batches >= 2 * task.n_critic  # G stepped at least twice
    assert norms and all(int(m.num_batches_tracked) == batches for m in norms)
    assert math.isfinite(metrics["g_loss"])
