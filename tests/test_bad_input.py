"""Bad trainer input: one clear message naming the key, exit code 2, nothing written."""

from __future__ import annotations

import pytest
import torchvision

from trainers.__main__ import main


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


def test_standard_fid_without_its_weights(capsys, tmp_path, tiny):
    args = [f"--set={k}={v}" for k, v in tiny.items()]
    code, err = run(capsys, tmp_path, "dcgan", *args, "--set", "standard_fid=true")
    assert code == 2
    assert "standard_fid=true needs the torch-fidelity package" in err
