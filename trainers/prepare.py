"""What every trial of a sweep needs before it trains, made ready once per node: the dataset
(downloaded on first use) and, for the GAN trainers, the dataset's evaluator network (trained on
first use, tens of seconds on a CPU).

A sweep calls `prepare` on each node before its first trial starts, so the first trials do not
queue behind one another on the cache's locks while one of them trains the evaluator. A trial
that finds them missing (on a node that joined later) still makes them itself, under those locks.
"""

from __future__ import annotations

from typing import Any

from trainers import catalog, evaluator, runtime
from trainers import data as datasets

# The data keys that decide what is downloaded and which evaluator a trial uses (its cache key).
# The others (max_train, val_fraction, test_fraction) do not: the evaluator trains on every
# training image, and its cache key leaves the fractions out.
DEFINING_KEYS = ("dataset", "data_path", "data_dir", "image_size", "channels", "split_seed")


def data_config(trainer: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The data and device keys of a `trainer` trial with these overrides (the rest left out), checked:
    a ConfigError names the key at fault, as the trial would."""
    defaults = catalog.get(trainer).defaults
    keys = [*datasets.DEFAULTS, "device"]
    config = {key: overrides.get(key, defaults[key]) for key in keys}
    datasets.check(config)
    return config


def prepare(trainer: str, overrides: dict[str, Any]) -> str:
    """Load the dataset and, for a GAN trainer, load or train its evaluator; cheap once cached.
    Returns what it did, such as 'mnist5k: evaluator trained'."""
    config = {**data_config(trainer, overrides), "max_train": None}  # the evaluator's: every image
    device = runtime.device(config["device"])
    data = datasets.load(config, device)
    if trainer not in catalog.GAN_TRAINERS:
        return f"{config['dataset']}: data ready"
    found = evaluator.cached_path(config, data).exists()
    evaluator.load_or_train(config, data, device)
    return f"{config['dataset']}: evaluator {'found' if found else 'trained'}"
