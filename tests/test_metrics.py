"""The sample-quality metrics can tell real images from noise (so they can fail)."""

from __future__ import annotations

import pytest
import torch

from trainers import data, evaluator, gan
from trainers.metrics import SampleQuality, real_fake_scores


def test_fid_is_near_zero_for_the_same_set_and_large_for_noise(tiny):
    config = gan.resolve("dcgan", {**tiny, "max_train": None})
    images = data.load(config, torch.device("cpu"))
    net, _ = evaluator.load_or_train(config, images, torch.device("cpu"))
    both, _ = images.train.take(120)
    real, other = both[:60], both[60:]
    quality = SampleQuality(net, real)

    same = quality(real)
    other_real = quality(other)
    noise = quality(torch.rand_like(real) * 2 - 1)

    assert abs(same["fid"]) < 1e-3
    assert noise["fid"] > 10 * other_real["fid"]
    assert noise["kid"] > 10 * max(other_real["kid"], 1e-6)
    # three equally frequent classes, recognised by the evaluator: IS close to 3
    assert same["inception_score"] > 2.5
    assert noise["inception_score"] < same["inception_score"]
    # the features' spread relative to the real set's: 1 for the set itself, near 0 for one image
    assert same["sample_diversity"] == pytest.approx(1.0)
    assert 0.5 < other_real["sample_diversity"] < 2.0
    assert quality(real[:1].expand_as(real).clone())["sample_diversity"] < 1e-6


def test_d_acc_and_f1():
    real = torch.tensor([2.0, 1.0, -1.0, 3.0])  # three called real
    fake = torch.tensor([-2.0, -1.0, 0.5, -3.0])  # one called real
    scores = real_fake_scores(real, fake, threshold=0.0)
    assert scores["d_acc"] == 6 / 8
    assert scores["d_f1"] == 2 * 3 / (2 * 3 + 1 + 1)


def test_d_accuracy_on_each_half_precision_and_recall():
    """Reports 003 and 004 read D's accuracy on the real and on the fake half, its precision and recall."""
    real = torch.tensor([2.0, 1.0, -1.0, 3.0])  # three of four called real
    fake = torch.tensor([-2.0, -1.0, 0.5, -3.0, -4.0, -5.0])  # one of six called real
    scores = real_fake_scores(real, fake, threshold=0.0)
    assert scores["d_acc_real"] == 3 / 4 and scores["d_recall"] == 3 / 4
    assert scores["d_acc_fake"] == 5 / 6
    assert scores["d_precision"] == 3 / 4  # 3 true positives, 1 false
    assert scores["d_acc"] == 8 / 10
    silent = real_fake_scores(torch.tensor([-1.0]), torch.tensor([-1.0]), threshold=0.0)
    assert silent["d_precision"] == 0.0 and silent["d_recall"] == 0.0  # nothing called real


def test_the_inception_score_comes_with_its_spread(tiny):
    config = gan.resolve("dcgan", {**tiny, "max_train": None})
    images = data.load(config, torch.device("cpu"))
    net, _ = evaluator.load_or_train(config, images, torch.device("cpu"))
    real, _ = images.train.take(100)
    scores = SampleQuality(net, real)(real)
    assert scores["inception_score_std"] >= 0.0
    assert scores["inception_score_std"] < scores["inception_score"]
    noisy = SampleQuality(net, real)(torch.rand_like(real) * 2 - 1)
    assert noisy["inception_score_std"] != scores["inception_score_std"]
