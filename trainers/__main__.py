"""Run one trainer alone: `python -m trainers dcgan --config x.yaml --set lr=2e-4 --out runs/x`.

Prints one line per epoch and writes under --out: metrics.jsonl, samples/epoch_NNN.png and
checkpoints/epoch_NNN/ (the last two kept). `--resume` continues from the newest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from trainers import catalog
from trainers.config import ConfigError, parse_value
from trainers.loop import Diverged

KEEP_CHECKPOINTS = 2
SHOWN = ("g_loss", "d_loss", "d_acc", "fid", "kid", "inception_score",
         "train_loss", "train_acc", "val_loss", "val_acc", "test_acc")


class LocalReport:
    """The report hook of a standalone run: a progress line per epoch and files under `out`."""

    def __init__(self, out: Path, epochs: int):
        self.out, self.epochs = out, epochs

    def __call__(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if checkpoint_dir is None:
            return
        epoch = metrics["epoch"]
        print(progress_line(metrics, self.epochs), flush=True)
        (self.out / "samples").mkdir(exist_ok=True)
        for picture in Path(checkpoint_dir).glob("*.png"):
            shutil.copy(picture, self.out / "samples" / f"{picture.stem}_epoch_{epoch:03d}.png")
        target = self.out / "checkpoints" / f"epoch_{epoch:03d}"
        shutil.copytree(checkpoint_dir, target.with_suffix(".tmp"), dirs_exist_ok=True)
        target.with_suffix(".tmp").rename(target)
        for old in sorted((self.out / "checkpoints").glob("epoch_*"))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old)


def progress_line(metrics: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {metrics['epoch']}/{epochs}"]
    parts += [f"{k} {metrics[k]:.4g}" for k in SHOWN if k in metrics]
    parts.append(f"{metrics['epoch_time_s']:.1f}s")
    if "images_per_s" in metrics:
        parts.append(f"{metrics['images_per_s']:.0f} img/s")
    return "  ".join(parts)


def latest_checkpoint(out: Path) -> str | None:
    found = sorted((out / "checkpoints").glob("epoch_[0-9][0-9][0-9]"))
    return str(found[-1]) if found else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trainer", choices=sorted(catalog.TRAINERS))
    parser.add_argument("--config", type=Path, help="YAML file of config values")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value (repeatable), e.g. --set loss=lsgan")
    parser.add_argument("--out", type=Path, default=Path("runs/local"), help="output folder")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if args.config:
        try:
            config = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"--config {args.config}: cannot read it as YAML ({err})") from err
        if not isinstance(config, dict):
            raise ConfigError(f"--config {args.config}: expected a mapping of config keys")
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lr=2e-4")
        config[key.strip()] = parse_value(value)
    return config


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = catalog.get(args.trainer)
        config = load_config(args)
        if args.resume:
            config["resume_from"] = latest_checkpoint(args.out)
            if config["resume_from"] is None:
                raise ConfigError(f"--resume: no checkpoint under {args.out / 'checkpoints'}")
        epochs = config.get("epochs", spec.defaults["epochs"])
        spec.train(config, LocalReport(args.out, epochs))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Diverged as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 1
    print(f"done: metrics, samples and checkpoints are in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
