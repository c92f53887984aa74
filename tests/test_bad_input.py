"""Bad trainer input: one clear message naming the key, exit code 2, nothing written."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision
from recording import Recorder

from trainers import catalog, gan
from trainers.__main__ import main
from trainers.config import ConfigError


def run(capsys, tmp_path, *args) -> tuple[int, str]:
    out = tmp_path / "out"
    code = main([*args, "--out", str(out)])
    assert not out.exists(), "nothing may be written for bad input"
    return code, capsys.readouterr().err


@pytest.mark.parametrize("key, value, named", [
    ("loss", "wgan", "loss='wgan' is not one of: bce, lsgan, wgan-gp, hinge"),
    ("g_activation", "swish", "g_activation='swish' is not one of: relu, leaky_relu, prelu, elu"),
    ("activation", "tanh", "activation='tanh' is not one of"),
    ("dataset", "imagenet", "dataset='imagenet' is not one of: mnist, fashion_mnist, cifar10, folder"),
    ("optimizer", "adamw", "optimizer='adamw' is not one of: adam, adamax, nadam, amsgrad, rmsprop, sgd"),
    ("lr", "-1e-4", "lr=-0.0001 must be a number greater than 0"),
    ("lr_d", "0", "lr_d=0 must be a number greater than 0"),
    ("image_size", "48", "image_size=48 cannot be produced by the DCGAN; use one of (28, 32, 64, 128)"),
    ("d_norm", "group", "d_norm='group' is not one of: batch, layer, instance, none"),
    ("ngf_", "3", "unknown config key 'ngf_' for trainer 'dcgan'. Did you mean ngf"),
    ("amp", "fp16", "amp='fp16' is not supported: float16 needs loss scaling"),
    ("device", "tpu", "device='tpu' is not one of: auto, cpu, cuda, cuda:N"),
])
def test_bad_value_is_named(capsys, tmp_path, key, value, named):
    code, err = run(capsys, tmp_path, "dcgan", "--set", f"{key}={value}")
    assert code == 2
    assert named in err
    assert "Traceback" not in err


def test_folder_without_images(capsys, tmp_path):
    empty = tmp_path / "empty" / "class_a"
    empty.mkdir(parents=True)
    (empty / "notes.txt").write_text("no pictures here")
    code, err = run(capsys, tmp_path, "dcgan", "--set", "dataset=folder",
                    "--set", f"data_path={empty.parent}")
    assert code == 2
    assert "holds no images" in err and str(empty.parent) in err


def test_folder_missing_path(capsys, tmp_path):
    code, err = run(capsys, tmp_path, "dcgan", "--set", "dataset=folder")
    assert code == 2
    assert "needs data_path" in err


def test_missing_dataset_offline(capsys, tmp_path, monkeypatch):
    # Point torchvision's real download at a closed local port: what "offline" looks like.
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    code, err = run(capsys, tmp_path, "dcgan", "--set", "dataset=mnist",
                    "--set", f"data_dir={tmp_path / 'data'}")
    assert code == 2
    assert "dataset='mnist' is not in" in err and "mnist5k" in err


def test_unreadable_config_file(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [unclosed")
    code, err = run(capsys, tmp_path, "dcgan", "--config", str(bad))
    assert code == 2 and str(bad) in err


@pytest.mark.slow  # trains a dcgan epoch with Inception at 299 px on the CPU
def test_standard_fid_without_its_weights(capsys, tmp_path, tiny):
    args = [f"--set={k}={v}" for k, v in tiny.items()]
    code, err = run(capsys, tmp_path, "dcgan", *args, "--set", "standard_fid=true")
    assert code == 2
    assert "standard_fid=true needs the torch-fidelity package" in err


@pytest.mark.parametrize("trainer, overrides, key, named", [
    ("dcgan", {"ngf_": 3}, "ngf_", "unknown config key 'ngf_'"),
    ("dcgan", {"lr": -1}, "lr", "lr=-1 must be a number greater than 0"),
    ("dcgan", {"beta1": 1.5}, "beta1", "beta1=1.5 must be a number in [0.0, 0.999]"),
    ("dcgan", {"loss": "wgan"}, "loss", "loss='wgan' is not one of"),
    ("dcgan", {"image_size": 48}, "image_size", "image_size=48 cannot be produced by the DCGAN"),
    ("dcgan", {"amp": "fp16"}, "amp", "float16 needs loss scaling"),
    ("classifier", {"amp": "int8"}, "amp", "amp='int8' is not one of: none, bf16"),
    ("dcgan", {"amp": "bf16", "device": "cpu"}, "amp", "with device='cpu' it would be ignored"),
    ("classifier", {"device": "gpu"}, "device", "device='gpu' is not one of: auto, cpu, cuda, cuda:N"),
    ("dcgan", {"loss": "hinge", "label_smoothing": 0.1}, "label_smoothing",
     "label_smoothing=0.1 has no effect with loss='hinge': only bce and lsgan use it"),
    ("mlp_gan", {"loss": "wgan-gp", "label_smoothing": 0.1}, "label_smoothing",
     "has no effect with loss='wgan-gp': only bce and lsgan use it"),
    ("dcgan", {"loss": "bce", "gp_weight": 5.0}, "gp_weight",
     "gp_weight=5.0 has no effect with loss='bce': only wgan-gp use it"),
    ("dcgan", {"loss": "wgan-gp", "d_norm": "batch"}, "d_norm",
     "Gulrajani et al., section 4: no batch norm in the critic). Use d_norm: layer, instance or none"),
    ("mlp_gan", {"d_norm": "layer"}, "d_norm", "the MLP discriminator has no normalisation layers"),
    ("mlp_gan", {"hidden": []}, "hidden", "hidden=[] must be a list of layer widths"),
    ("dcgan", {"arch": "mlp"}, "arch", "arch='mlp' is not one of: dcgan"),
    ("dcgan", {"channels": 2}, "channels", "channels=2 must be 1 or 3"),
    ("dcgan", {"dataset": "folder"}, "data_path", "dataset='folder' needs data_path"),
    ("classifier", {"val_fraction": 0}, "val_fraction", "val_fraction=0 leaves no validation images"),
    ("dcgan", {"spectral_norm": "false"}, "spectral_norm", "spectral_norm='false' must be true or false"),
    ("classifier", {"seed": 1.5}, "seed", "seed=1.5 must be a whole number, 0 or more"),
    ("transfer", {"source": "x", "freeze_epochs": -1}, "freeze_epochs", "freeze_epochs=-1 must be a whole"),
    ("transfer", {}, "source", "transfer needs source"),
    ("augment", {"augment": "gan"}, "generator", "augment=gan needs generator"),
    ("classifier", {"arch": "lenet5", "input": "resize224"}, "input", "input='resize224' is only for"),
])
def test_resolve_names_the_key(trainer, overrides, key, named):
    with pytest.raises(ConfigError) as caught:
        catalog.get(trainer).resolve(overrides)
    assert caught.value.key == key
    assert named in str(caught.value)


def test_the_key_survives_pickling():  # a trial's error crosses processes under Ray
    error = pickle.loads(pickle.dumps(ConfigError("lr=-1 must be a number greater than 0", key="lr")))
    assert (str(error), error.key) == ("lr=-1 must be a number greater than 0", "lr")


def test_wgan_gp_critic_gets_no_batch_norm_by_default(tiny):
    def norms(config: dict) -> set[type]:
        _, critic = gan.models.build(config, channels=1, image_size=28, num_classes=3)
        kinds = (torch.nn.BatchNorm2d, torch.nn.GroupNorm)
        return {type(m) for m in critic.modules() if isinstance(m, kinds)}

    wgan = gan.resolve("dcgan", {**tiny, "loss": "wgan-gp"})
    assert (wgan["d_norm"], wgan["n_critic"]) == ("layer", 5)
    assert norms(wgan) == {torch.nn.GroupNorm}
    bce = gan.resolve("dcgan", tiny)
    assert (bce["d_norm"], bce["n_critic"]) == ("batch", 1)
    assert norms(bce) == {torch.nn.BatchNorm2d}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where no CUDA GPU is visible")
def test_cuda_without_a_gpu_is_named_when_the_trainer_starts(tiny, tmp_path):
    config = gan.resolve("dcgan", {**tiny, "device": "cuda"})  # a GPU-less sweep driver accepts it
    assert config["device"] == "cuda"
    record = Recorder(tmp_path)
    with pytest.raises(ConfigError, match="no CUDA GPU is visible") as caught:
        gan.train_dcgan({**tiny, "device": "cuda"}, record)
    assert caught.value.key == "device" and record.metrics == []
