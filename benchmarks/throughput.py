"""Trainer throughput: gansweep's GAN trainers against the training loop of pytorch/examples' dcgan.

    python -m benchmarks.throughput [--quick] [--device auto|cpu|cuda] [--threads N] [--json PATH]

Each case (a DCGAN and the MLP GAN on the offline mnist5k digits, 28 px) builds gansweep's task
(trainers/gan.py GanTask, nothing evaluated: the evaluator network is left untrained) and the
reference (benchmarks/reference_dcgan.py: a DataLoader, per-batch .to(device), BCELoss on a
sigmoid D, Adam) from one resolved config: the same models, initial weights, images, batch size,
Adam settings (lr 2e-4, betas (0.5, 0.999), the example's), device and torch threads (on the CPU
one, as a sweep's trial of one CPU has; --threads N to change). After a warm-up epoch each, their
epochs alternate (reference, gansweep, gansweep with an option, ...) so that drift in the machine's
speed hits all. The first table gives the median images/s, the ratio of the medians and
the range of the ratios within one round, and each loop's mean D loss by epoch (both must fall from
chance, log 4 = 1.39, and alike: the reference is checked to train). The second gives, for each
speed option the trainer offers that applies on the device, its images/s against the default's.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any
from unittest import mock

import torch

from benchmarks.reference_dcgan import ReferenceGan
from benchmarks.report import Table, machine, median, parser, publish
from trainers import evaluator, gan, runtime
from trainers.evaluator import EvaluatorNet

COMMON: dict[str, Any] = {"dataset": "mnist5k", "image_size": 28, "epochs": 1, "eval_samples": 16,
                          "sample_grid": 16, "lr": 2e-4, "beta1": 0.5}
CASES: dict[str, tuple[str, dict[str, Any]]] = {  # name -> (trainer, overrides)
    "dcgan 28 px (ngf = ndf = 64), batch 64": ("dcgan", {"ngf": 64, "ndf": 64, "batch_size": 64}),
    "mlp gan 28 px (hidden 256-512-1024), batch 256": ("mlp_gan", {"batch_size": 256}),
}


@dataclass(frozen=True)
class Option:
    """A speed option of the trainer's config, and where it applies."""
    overrides: dict[str, Any]
    devices: tuple[str, ...]  # device types
    trainers: tuple[str, ...]


# The speed options gansweep's config offers (trainers/runtime.py). Data on the device is not an
# option: datasets that fit are always held there (trainers/data.py).
OPTIONS: dict[str, Option] = {
    "amp=bf16": Option({"amp": "bf16"}, ("cuda",), ("dcgan", "mlp_gan")),
    "channels_last": Option({"channels_last": True}, ("cpu", "cuda"), ("dcgan",)),
}


@dataclass(frozen=True)
class Settings:
    images: int  # training images per epoch: a multiple of every case's batch size
    repeats: int  # timed epochs per loop, after one warm-up epoch
    threads: int | None = None  # torch threads while measuring (None: torch's default)


# On the CPU one thread, what a sweep's trial of `resources: {cpu: 1}` gets. It is also the only
# steady setting on a small shared machine: with a thread per core, any other busy process stalls
# every parallel op (on a loaded 2-core machine, the quickstart's DCGAN ran 2-18x slower with two
# threads than with one, and the ratios between loops swung from 0.2x to 2x).
SETTINGS = {  # (quick, device type) -> settings; a GPU trains an epoch in a fraction of a second
    (True, "cpu"): Settings(images=1024, repeats=3, threads=1),
    (False, "cpu"): Settings(images=3840, repeats=5, threads=1),
    (True, "cuda"): Settings(images=3840, repeats=3), (False, "cuda"): Settings(images=3840, repeats=9),
}
GPU_TARGETS = {"dcgan": 3.0}  # the goal for MNIST-size DCGANs on a GPU, by trainer; elsewhere: at least 1x
CHANCE = math.log(4)  # BCE D loss (real + fake terms) of a D that cannot tell: 2 log 2


def untrained_evaluator(config: dict[str, Any], data, device: torch.device) -> tuple[EvaluatorNet, str]:
    """Stands in for evaluator.load_or_train: nothing is evaluated, so nothing is trained or cached."""
    return EvaluatorNet(data.channels, max(data.num_classes, 2)).to(device).eval(), "untrained"


def build_task(config: dict[str, Any]) -> gan.GanTask:
    """gansweep's task for a resolved config, with an untrained evaluator (only training is timed)."""
    with mock.patch.object(evaluator, "load_or_train", untrained_evaluator):
        return gan.GanTask(config)


def case_config(trainer: str, overrides: dict[str, Any], images: int, device: str) -> dict[str, Any]:
    return gan.resolve(trainer, {**COMMON, "max_train": images, "device": device, **overrides})


def measure(trainer: str, overrides: dict[str, Any], device: str, settings: Settings) -> dict[str, Any]:
    """Images/s of every loop over settings.repeats alternating epochs, and their losses by epoch."""
    config = case_config(trainer, overrides, settings.images, device)
    task = build_task(config)
    batch = config["batch_size"]
    ours_images = len(task.data.train) // batch * batch  # the trainer drops a last partial batch
    reference = ReferenceGan(config, task.data.train.images, task.device)

    def reference_epoch(epoch: int) -> tuple[int, dict[str, float]]:
        metrics = reference.train_epoch()
        return metrics["images"], metrics

    def ours(task: gan.GanTask) -> Callable[[int], tuple[int, dict[str, float]]]:
        return lambda epoch: (ours_images, task.train_epoch(epoch))  # ends with a sync (reads means)

    loops = {"reference": reference_epoch, "gansweep": ours(task)}
    for name, option in applicable_options(trainer, task.device):
        loops[name] = ours(build_task(case_config(trainer, {**overrides, **option.overrides},
                                                  settings.images, device)))
    rates: dict[str, list[float]] = {name: [] for name in loops}
    losses: dict[str, list[dict[str, float]]] = {name: [] for name in loops}
    for repeat in range(settings.repeats + 1):  # the first round warms up (allocator, kernels, caches)
        for name, epoch in loops.items():
            began = time.perf_counter()
            images, metrics = epoch(repeat + 1)
            elapsed = time.perf_counter() - began
            losses[name].append({key: metrics[key] for key in ("d_loss", "g_loss", "d_real", "d_fake")})
            if repeat:
                rates[name].append(images / elapsed)
    return {"trainer": trainer,
            "config": {k: config[k] for k in ("batch_size", "max_train", "noise_dim", "device")},
            "images_per_epoch": ours_images, "images_per_s": rates, "losses_by_epoch": losses,
            "median": {name: median(r) for name, r in rates.items()}}


def applicable_options(trainer: str, device: torch.device) -> list[tuple[str, Option]]:
    return [(name, option) for name, option in OPTIONS.items()
            if device.type in option.devices and trainer in option.trainers]


def losses_alike(reference: list[float], ours: list[float]) -> bool:
    """Both D losses below chance after the first epoch, the reference's within 1.5x of ours."""
    first_ref, first_ours = reference[0], ours[0]
    return first_ref < CHANCE and first_ours < CHANCE and 1 / 1.5 <= first_ref / first_ours <= 1.5


def paired(result: dict[str, Any], name: str, baseline: str) -> str:
    """The range of name/baseline within one round: wide means a busy machine."""
    ratios = [a / b for a, b in zip(result["images_per_s"][name], result["images_per_s"][baseline],
                                    strict=True)]
    return f"{min(ratios):.2f}-{max(ratios):.2f}x"


def d_losses(result: dict[str, Any], name: str) -> list[float]:
    return [epoch["d_loss"] for epoch in result["losses_by_epoch"][name]]


def tables(quick: bool, device: str, threads: int | None = None) -> list[Table]:
    """threads: torch threads while measuring, instead of the settings' (1 on the CPU)."""
    settings = SETTINGS[quick, runtime.device(device).type]
    if threads:
        settings = replace(settings, threads=threads)
    results = {}
    with torch_threads(settings.threads):
        for name, (trainer, overrides) in CASES.items():
            print(f"throughput: {name}: {settings.repeats} + 1 epochs of {settings.images} images per loop",
                  file=sys.stderr, flush=True)
            results[name] = measure(trainer, overrides, device, settings)
    return [speed_table(results, settings, device, quick), options_table(results, settings, device)]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch.set_num_threads(threads) for the block (None: leave it), restored afterwards."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def speed_table(results: dict[str, dict[str, Any]], settings: Settings, device: str,
                quick: bool) -> Table:
    rows, notes = [], []
    cuda = runtime.device(device).type == "cuda"
    for name, result in results.items():
        ref, ours = result["median"]["reference"], result["median"]["gansweep"]
        ref_d, ours_d = d_losses(result, "reference"), d_losses(result, "gansweep")
        rows.append((name, ref, ours, f"{ours / ref:.2f}x", paired(result, "gansweep", "reference"),
                     f"{ref_d[0]:.2f} -> {ref_d[-1]:.2f}", f"{ours_d[0]:.2f} -> {ours_d[-1]:.2f}"))
        alike = losses_alike(ref_d, ours_d)
        notes.append(f"- {name}: losses {'move alike' if alike else 'DO NOT move alike'} (D loss by epoch, "
                     f"reference {', '.join(f'{d:.2f}' for d in ref_d)}; gansweep "
                     f"{', '.join(f'{d:.2f}' for d in ours_d)}; chance {CHANCE:.2f}).")
        target = GPU_TARGETS.get(result["trainer"], 1.0) if cuda else 1.0
        verdict = "met" if ours / ref >= target else f"missed by {(1 - ours / ref / target) * 100:.0f} %"
        notes.append(f"- {name}: target gansweep >= {target:g}x the reference: {verdict}.")
    return Table(
        name="throughput",
        title=f"GAN training images/s, gansweep's trainer vs pytorch/examples' dcgan loop, median of "
              f"{settings.repeats} alternating epochs of {settings.images} images "
              f"({machine(runtime.device(device))['device']}, {threads_label(settings)}, "
              f"{'quick' if quick else 'full'}; on a GPU both loops run with cuDNN's autotuner on)",
        header=("case", "reference (DataLoader)", "gansweep", "speed-up", "per-round ratios",
                "reference D loss, epoch 1 -> last", "gansweep D loss, epoch 1 -> last"),
        rows=rows, notes=notes, details={"settings": vars(settings), "cases": results})


def threads_label(settings: Settings) -> str:
    threads = settings.threads or torch.get_num_threads()
    return f"{threads} torch thread{'s' if threads > 1 else ''}"


def options_table(results: dict[str, dict[str, Any]], settings: Settings, device: str) -> Table:
    rows = []
    for name, result in results.items():
        default = result["median"]["gansweep"]
        for option in OPTIONS:
            if option in result["median"]:
                rate = result["median"][option]
                rows.append((name, option, default, rate, f"{rate / default:.2f}x",
                             paired(result, option, "gansweep")))
    dev = runtime.device(device)
    absent = [name for name, option in OPTIONS.items() if dev.type not in option.devices]
    notes = [f"- Speed options gansweep offers: {', '.join(OPTIONS)}"
             + (f" ({', '.join(absent)}: CUDA only, so not measured here)" if absent else "")
             + ". Not offered: fused Adam, torch.compile, CUDA graphs. Data on the device is always on."]
    return Table(name="throughput_options",
                 title=f"Speed options one at a time: gansweep images/s with the option vs the default, "
                       f"median of {settings.repeats} alternating epochs ({machine(dev)['device']}, "
                       f"{threads_label(settings)})",
                 header=("case", "option", "default", "with option", "ratio", "per-round ratios"),
                 rows=rows, notes=notes)


def main(argv: list[str] | None = None) -> int:
    options = parser("throughput", __doc__, "fewer images and epochs (see SETTINGS)")
    options.add_argument("--threads", type=int, default=None,
                         help="torch threads while measuring (default: 1 on the CPU, torch's on a GPU)")
    args = options.parse_args(argv)
    return publish("throughput", args, tables(args.quick, args.device, args.threads), args.device)


if __name__ == "__main__":
    sys.exit(main())
