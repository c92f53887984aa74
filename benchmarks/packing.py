"""Packing: aggregate images/s of k MNIST DCGAN trainings running at once on one device, against k = 1.

    python -m benchmarks.packing [--quick] [--device auto|cpu|cuda] [--json PATH]

The trainings are the quickstart's first trial (its standard recipe: 28 px mnist5k digits, ngf 32,
ndf 16, noise 64, batch 64; gansweep's GanTask, nothing evaluated), each in a Ray actor holding the
resources a sweep's trial would: on the CPU one core each (one torch thread), k = 1, 2; on a GPU a
1/k share of it (fractional GPUs), k = 1, 2, 4, 8. On the CPU a last row gives one trial every core
and as many threads: what packing is up against there. The benchmark starts a local Ray instance of its
own (never an existing cluster) and stops it at the end. For each k the actors build their task and
train a warm-up epoch; then, in each of several rounds, all k train the same number of epochs at
once, and the aggregate rate is all their images over the span from the first start to the last
finish. The table gives the median aggregate over the rounds, its ratio to k = 1's, and the median
rate of one trial. The values of k run one after another (their actors cannot all exist at once).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks.report import Table, machine, median, parser, publish
from benchmarks.throughput import build_task, case_config
from trainers import runtime

RECIPE: dict[str, Any] = {"ngf": 32, "ndf": 16, "noise_dim": 64, "batch_size": 64}  # quickstart.yaml
GPU_TARGET = (4, 2.5)  # k, aggregate ratio to k = 1: the goal on one GPU


@dataclass(frozen=True)
class Settings:
    images: int  # training images per epoch (a multiple of the batch size)
    epochs: int  # epochs per trial in each round
    rounds: int


SETTINGS = {  # (quick, device type) -> settings; a GPU trains an epoch in a fraction of a second
    (True, "cpu"): Settings(images=1024, epochs=2, rounds=3), (False, "cpu"): Settings(3840, 2, rounds=5),
    (True, "cuda"): Settings(images=3840, epochs=5, rounds=3), (False, "cuda"): Settings(3840, 10, rounds=5),
}


class PackedTrainer:
    """One training (what one of a sweep's trials runs), built and warmed up when the actor starts."""

    def __init__(self, config: dict[str, Any], threads: int | None):
        if threads:
            torch.set_num_threads(threads)
        self.task = build_task(config)
        batch = config["batch_size"]
        self.images_per_epoch = len(self.task.data.train) // batch * batch  # drop_last
        self.task.train_epoch(1)  # warm-up: allocator, kernels, caches

    def ready(self) -> bool:
        return True

    def train(self, epochs: int) -> dict[str, float]:
        """Train `epochs` epochs; wall-clock start and end (one clock: the actors share the machine)."""
        start = time.time()
        for epoch in range(epochs):
            self.task.train_epoch(epoch + 2)  # each epoch ends with a sync
        end = time.time()
        return {"images": self.images_per_epoch * epochs, "start": start, "end": end}


def aggregate(trials: list[dict[str, float]]) -> float:
    """All images over the wall span from the first trial's start to the last one's end."""
    span = max(t["end"] for t in trials) - min(t["start"] for t in trials)
    return sum(t["images"] for t in trials) / span


@dataclass(frozen=True)
class Plan:
    """k trainings at once, each holding `cores` CPUs (on the CPU: as many torch threads)."""
    k: int
    cores: int = 1

    def label(self) -> str:
        return str(self.k) if self.cores == 1 else f"{self.k} ({self.cores} threads)"


def plans(device: torch.device) -> list[Plan]:
    """GPU: 1, 2, 4, 8 trials on 1/k of it. CPU: 1 and 2 trials of one core, and, to show what
    packing is up against there, 1 trial of every core."""
    if device.type == "cuda":
        return [Plan(k) for k in (1, 2, 4, 8)]
    return [Plan(1), Plan(2), Plan(1, cores=machine("cpu")["cores"])]


def measure(plans: list[Plan], device: torch.device, settings: Settings) -> dict[str, dict[str, Any]]:
    """For each plan (one after another: their actors cannot all exist at once), the rounds' trials."""
    import ray

    config = case_config("dcgan", RECIPE, settings.images, str(device))
    cuda = device.type == "cuda"
    # The warning Ray 2.60 prints at each new local instance about its token (as orchestrator.sweep).
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    ray.init(address="local", num_cpus=max(p.k * p.cores for p in plans), num_gpus=1 if cuda else 0,
             include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        results = {}
        for plan in plans:
            print(f"packing: k = {plan.label()}: {settings.rounds} rounds of {settings.epochs} epoch(s) of "
                  f"{settings.images} images per trial", file=sys.stderr, flush=True)
            actor = ray.remote(PackedTrainer).options(num_cpus=plan.cores, num_gpus=1 / plan.k if cuda else 0)
            trainers = [actor.remote(config, None if cuda else plan.cores) for _ in range(plan.k)]
            ray.get([t.ready.remote() for t in trainers])  # all built and warm: the rounds start together
            rounds = [ray.get([t.train.remote(settings.epochs) for t in trainers])
                      for _ in range(settings.rounds)]
            for trainer in trainers:
                ray.kill(trainer)
            results[plan.label()] = {
                "k": plan.k, "cores": plan.cores, "rounds": rounds,
                "aggregate": [aggregate(r) for r in rounds],
                "per_trial": [t["images"] / (t["end"] - t["start"]) for r in rounds for t in r]}
        return results
    finally:
        ray.shutdown()


def tables(quick: bool, device: str) -> list[Table]:
    dev = runtime.device(device)
    cuda = dev.type == "cuda"
    settings = SETTINGS[quick, dev.type]
    results = measure(plans(dev), dev, settings)
    base = median(results["1"]["aggregate"])
    rows = [(label, median(r["aggregate"]), f"{median(r['aggregate']) / base:.2f}x", median(r["per_trial"]),
             f"{min(r['aggregate']):,.0f}-{max(r['aggregate']):,.0f}") for label, r in results.items()]
    k_target, target = GPU_TARGET
    if cuda:
        ratio = median(results[str(k_target)]["aggregate"]) / base
        verdict = "met" if ratio >= target else f"missed by {(1 - ratio / target) * 100:.0f} %"
        notes = [f"- Target: at least {target}x the k = 1 aggregate with {k_target} trials on one GPU: "
                 f"{ratio:.2f}x, {verdict}."]
    else:
        cores = machine("cpu")["cores"]
        notes = [f"- On the CPU each trial holds one core and one torch thread; with {cores} cores the ideal "
                 f"is {cores}x. The last row is one trial given every core (what a sweep of one trial at a "
                 f"time gets). The GPU target ({target}x with {k_target} trials) needs --device cuda."]
    resources = "1/k of the GPU and 1 CPU each" if cuda else "1 core (1 thread) each"
    return [Table(
        name="packing",
        title=f"Packing: aggregate images/s of k quickstart DCGAN trainings at once ({resources}), median of "
              f"{settings.rounds} rounds of {settings.epochs} epoch(s) x {settings.images} images per trial "
              f"({machine(dev)['device']}{', ' + machine(dev)['gpu'] if cuda else ''}, "
              f"{'quick' if quick else 'full'})",
        header=("k", "aggregate images/s", "vs k = 1", "images/s per trial", "aggregate, range of rounds"),
        rows=rows, notes=notes,
        details={"settings": vars(settings), "config": dict(RECIPE), "results": results})]


def main(argv: list[str] | None = None) -> int:
    args = parser("packing", __doc__, "fewer images and rounds (see SETTINGS)").parse_args(argv)
    return publish("packing", args, tables(args.quick, args.device), args.device)


if __name__ == "__main__":
    sys.exit(main())
