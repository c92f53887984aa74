"""What every trial of a sweep needs before it trains, made ready once per node: the dataset
(downloaded on first use) and, for the GAN trainers, the dataset's evaluator network (trained on
first use, a minute on a CPU).

A sweep calls `prepare` on each node before its first trial starts, so the first trials do not
queue behind one another on the cache's locks while one of them trains the evaluator. A trial
that finds them missing (on a node that joined later) still makes them itself, under those locks.
This module imports torch but no trainer: a node's `prepare` costs a second of imports, not four.
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
    a ConfigError names the key at fault, as the trial would. `max_train` is left out: the evaluator
    trains on every training image."""
    defaults = catalog.get(trainer).defaults
    config = {key: overrides.get(key, defaults[key]) for key in [*datasets.DEFAULTS, "device"]}
    datasets.check(config)
    return {**config, "max_train": None}


def evaluator_file(config: dict[str, Any]) -> tuple[str, bytes, str]:
    """The evaluator network of a `data_config`, from this node's cache or trained now: its cache
    key, its file's bytes (what a sweep stages for all its trials), and what was done."""
    device = runtime.device(config["device"])
    data = datasets.load(config, device)
    path = evaluator.cached_path(config, data)
    found = path.exists()
    evaluator.load_or_train(config, data, device)
    return (evaluator.cache_key(config, data), path.read_bytes(),
            f"{config['dataset']}: evaluator {'found' if found else 'trained'}")


def prepare(config: dict[str, Any], with_evaluator: bool) -> str:
    """Load the dataset of a `data_config` and, `with_evaluator`, load or train its evaluator;
    seconds once they are cached. Returns what it did, such as 'mnist5k: evaluator trained'."""
    device = runtime.device(config["device"])
    data = datasets.load(config, device)
    if not with_evaluator:
        return f"{config['dataset']}: data ready"
    found = evaluator.cached_path(config, data).exists()
    evaluator.load_or_train(config, data, device)
    return f"{config['dataset']}: evaluator {'found' if found else 'trained'}"
