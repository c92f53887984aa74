"""The GAN trainers' config: every key with its default and meaning, and `resolve`, the one place
where a GAN config is checked. What is built from a resolved config trusts it.
"""

from __future__ import annotations

from typing import Any

from trainers import data as datasets
from trainers import losses, optim, runtime
from trainers.config import ConfigError, check_choice, check_flag, check_positive, check_range, merge
from trainers.models import gan as models

COMMON_DEFAULTS: dict[str, Any] = {
    **datasets.DEFAULTS,
    # model
    "noise_dim": 100,
    "g_activation": "relu",  # relu | leaky_relu | prelu | elu
    "d_activation": "leaky_relu",
    "activation": None,  # sets both G's and D's activation (report 000's study)
    "leaky_slope": 0.2,
    "d_norm": None,  # batch | layer | instance | none (None: layer for wgan-gp, else batch)
    "spectral_norm": False,
    "d_dropout": 0.0,
    "conditional": False,
    "embed_dim": 50,
    # loss and stabilisers
    "loss": "bce",  # bce | lsgan | wgan-gp | hinge
    "n_critic": None,  # D steps per G step (None: 5 for wgan-gp, else 1)
    "gp_weight": 10.0,
    "label_smoothing": 0.0,  # one-sided: real target 1 - s
    "instance_noise": 0.0,  # std of Gaussian noise on D's inputs, decays linearly to 0
    "instance_noise_epochs": None,  # epochs over which it decays (None: all)
    # optimisation
    "optimizer": "adam",  # adam | adamax | nadam | amsgrad | rmsprop | sgd
    "lr": 2e-4,
    "lr_g": None,
    "lr_d": None,
    "beta1": 0.5,
    "beta2": 0.999,
    "weight_decay": 0.0,
    "batch_size": 64,
    "epochs": 10,
    # evaluation
    "eval_samples": 1000,  # generated images per epoch for fid/kid/inception_score/d_f1
    "standard_fid": False,  # also compute FID with the standard Inception weights (if present locally)
    "evaluator": None,  # a folder of evaluator networks by cache key (a sweep stages one for all its
    #                     trials); None: this machine's cache, trained on first use
    "sample_grid": 64,
    **runtime.DEFAULTS,
}

DCGAN_DEFAULTS: dict[str, Any] = {**COMMON_DEFAULTS, "arch": "dcgan", "ngf": 64, "ndf": 64}
MLP_DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    "arch": "mlp",
    "noise_dim": 64,
    "hidden": [256, 512, 1024],  # G's widths; D uses them reversed
    "d_norm": "none",
    "d_dropout": 0.3,
    "batch_size": 256,
    "lr": 1e-4,
    "beta1": 0.9,
}
DEFAULTS = {"mlp_gan": MLP_DEFAULTS, "dcgan": DCGAN_DEFAULTS}  # by trainer name


def trainer_of(config: dict[str, Any]) -> str:
    """The GAN trainer that builds a config's architecture (`arch`: mlp or dcgan)."""
    return next(name for name, defaults in DEFAULTS.items() if defaults["arch"] == config["arch"])


def resolve(trainer: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults + overrides, validated: every bad value fails here, before any data or model.

    Also fills the defaults that depend on the loss (`n_critic`, `d_norm`), so what is built from
    the result needs no checks and no rules of its own.
    """
    defaults = DEFAULTS[trainer]
    config = merge(defaults, overrides, trainer)
    datasets.check(config)
    runtime.check(config)
    check_choice(config, "arch", [defaults["arch"]])  # each trainer builds one architecture
    check_choice(config, "loss", losses.LOSSES)
    check_choice(config, "optimizer", optim.OPTIMIZERS)
    for key in ("g_activation", "d_activation", "activation"):
        if config[key] is not None:
            check_choice(config, key, models.ACTIVATIONS)
    check_positive(config, "lr", "lr_g", "lr_d", "batch_size", "epochs", "noise_dim", "eval_samples",
                   "gp_weight", "sample_grid", "n_critic", "embed_dim", "instance_noise_epochs")
    check_range(config, "beta1", 0.0, 0.999)
    check_range(config, "beta2", 0.0, 0.9999)
    check_range(config, "weight_decay", 0.0, 1.0)
    check_range(config, "leaky_slope", 0.0, 1.0)
    check_range(config, "label_smoothing", 0.0, 0.5)
    check_range(config, "d_dropout", 0.0, 0.95)
    check_range(config, "instance_noise", 0.0, 10.0)
    check_flag(config, "spectral_norm", "conditional", "standard_fid")
    _check_loss_options(config, defaults)
    _check_architecture(config)
    return derive(config)


def _check_loss_options(config: dict[str, Any], defaults: dict[str, Any]) -> None:
    """An option the chosen loss does not read (label smoothing for hinge, ...) is an error, not a no-op."""
    loss = losses.CLASSES[config["loss"]]
    for key in ("label_smoothing", "gp_weight"):
        if config[key] != defaults[key] and key not in loss.options:
            users = [name for name, cls in losses.CLASSES.items() if key in cls.options]
            raise ConfigError(f"{key}={config[key]!r} has no effect with loss={config['loss']!r}: only "
                              f"{' and '.join(users)} use it. Remove {key}, or set it only for those "
                              "losses (a param with `when: {loss: ...}`)", key=key)


def _check_architecture(config: dict[str, Any]) -> None:
    if config["arch"] == "mlp":
        hidden = config["hidden"]
        if not isinstance(hidden, (list, tuple)) or not hidden or not all(
                isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in hidden):
            raise ConfigError(f"hidden={hidden!r} must be a list of layer widths, e.g. [256, 512, 1024]",
                              key="hidden")
        if config["d_norm"] not in (None, "none"):
            raise ConfigError(f"d_norm={config['d_norm']!r}: the MLP discriminator has no normalisation "
                              "layers; use the dcgan trainer to compare them", key="d_norm")
        return
    check_positive(config, "ngf", "ndf")
    if config["d_norm"] is not None:
        check_choice(config, "d_norm", models.NORMS)
    if config["d_norm"] == "batch" and config["loss"] == "wgan-gp":
        raise ConfigError("d_norm='batch' with loss='wgan-gp': the gradient penalty is taken per image, "
                          "and batch norm makes each critic score depend on the whole batch (Gulrajani "
                          "et al., section 4: no batch norm in the critic). Use d_norm: layer, instance "
                          "or none", key="d_norm")
    size = config["image_size"]
    if size is not None and size not in models.DCGAN_SIZES:
        raise ConfigError(f"image_size={size} cannot be produced by the DCGAN; "
                          f"use one of {models.DCGAN_SIZES}", key="image_size")


def derive(config: dict[str, Any]) -> dict[str, Any]:
    """The defaults that follow the loss: WGAN-GP takes 5 critic steps per G step and a critic
    without batch norm (layer norm, as the paper suggests); the other losses 1 step and batch norm."""
    wgan = config["loss"] == "wgan-gp"
    if config["n_critic"] is None:
        config["n_critic"] = losses.CLASSES[config["loss"]].default_n_critic
    if config["d_norm"] is None:
        config["d_norm"] = "none" if config["arch"] == "mlp" else "layer" if wgan else "batch"
    return config
