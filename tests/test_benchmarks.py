"""The throughput and packing benchmarks on tiny settings: the reference loop trains, every loop is
measured and reported, packing's arithmetic. No timing is asserted (the machine is shared)."""

from __future__ import annotations

import math

import torch

from benchmarks import packing, throughput
from benchmarks.reference_dcgan import ReferenceGan

TINY = {"ngf": 8, "ndf": 8, "noise_dim": 16, "batch_size": 32}


def test_reference_loop_trains():
    config = throughput.case_config("dcgan", TINY, images=128, device="cpu")
    images = torch.randint(0, 256, (128, 1, 28, 28), dtype=torch.uint8)
    reference = ReferenceGan(config, images, torch.device("cpu"))
    noise = torch.randn(8, config["noise_dim"])
    before = reference.sample(noise)
    epochs = [reference.train_epoch() for _ in range(2)]
    assert all(epoch["images"] == 128 for epoch in epochs)
    assert all(math.isfinite(epoch[key]) for epoch in epochs for key in ("d_loss", "g_loss"))
    assert all(0 < epoch["d_real"] < 1 and 0 < epoch["d_fake"] < 1 for epoch in epochs)
    assert not torch.allclose(before, reference.sample(noise))  # G's weights moved
    assert reference.netD(images[:4].float()).min() >= 0  # D ends in a sigmoid, as BCELoss needs


def test_reference_starts_from_the_trainers_weights():
    config = throughput.case_config("dcgan", TINY, images=64, device="cpu")
    task = throughput.build_task(config)
    reference = ReferenceGan(config, task.data.train.images, task.device)
    for ours, theirs in ((task.generator, reference.netG), (task.discriminator, reference.netD[0])):
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(),
                                                       theirs.state_dict().values(), strict=True))


def test_throughput_measures_every_loop_and_reports_it():
    settings = throughput.Settings(images=64, repeats=1)
    result = throughput.measure("dcgan", TINY, "cpu", settings)
    assert set(result["median"]) == {"reference", "gansweep", "channels_last"}  # bf16: CUDA only
    assert all(rate > 0 for rates in result["images_per_s"].values() for rate in rates)
    assert all(len(epochs) == 2 for epochs in result["losses_by_epoch"].values())  # warm-up + 1
    speed = throughput.speed_table({"tiny dcgan": result}, settings, "cpu", quick=True)
    options = throughput.options_table({"tiny dcgan": result}, settings, "cpu")
    assert [row[0] for row in speed.rows] == ["tiny dcgan"]
    assert [row[1] for row in options.rows] == ["channels_last"]
    assert any("losses" in note for note in speed.notes)
    assert "| tiny dcgan |" in speed.markdown()


def test_losses_alike():
    assert throughput.losses_alike([0.9, 0.6], [0.8, 0.5])
    assert not throughput.losses_alike([1.5, 1.4], [0.8, 0.5])  # the reference never left chance
    assert not throughput.losses_alike([0.3, 0.2], [0.9, 0.5])  # too far from ours


def test_packed_trainer_and_aggregate():
    config = throughput.case_config("dcgan", TINY, images=64, device="cpu")
    trial = packing.PackedTrainer(config, threads=None).train(epochs=2)  # None: keep this process's threads
    assert trial["images"] == 128 and trial["end"] > trial["start"]
    trials = [{"images": 100, "start": 10.0, "end": 12.0}, {"images": 100, "start": 11.0, "end": 14.0}]
    assert packing.aggregate(trials) == 50.0  # 200 images from t = 10 to t = 14
