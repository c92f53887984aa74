"""GAN training throughput: the trainer's step, whose G step reuses the D step's batch of fakes,
against the step it replaced, which drew a fresh batch for the G step (a second G forward).

    python -m benchmarks.g_step [--quick] [--device auto|cpu|cuda] [--repeats N] [--json PATH]

Each case builds both tasks from one config and seed on the offline mnist5k digits. After a
warm-up epoch each, their epochs alternate (reference, trainer, reference, ...) so that drift in
the machine's speed hits both; the table gives the median images/s, the trainer's speed-up (ratio
of the medians) and the range of the ratios within one round (wide: a busy machine; measure again).
Only training is timed: the evaluator network is left untrained, since nothing is evaluated.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from benchmarks.report import machine, markdown_table, write_json
from trainers import evaluator, gan, runtime
from trainers.evaluator import EvaluatorNet

CASES: dict[str, tuple[str, dict[str, Any]]] = {  # name -> (trainer, overrides)
    "dcgan, bce": ("dcgan", {"loss": "bce"}),
    "dcgan, wgan-gp (n_critic 5)": ("dcgan", {"loss": "wgan-gp"}),
    "mlp gan, bce": ("gan", {"loss": "bce"}),
}


class FreshFakes(gan.GanTask):
    """The reference: the step as it was before the G step reused the D step's fakes."""

    def step(self, real, labels, noise_std, g_step):
        G, D, loss = self.generator, self.discriminator, self.loss
        with self.autocast:
            fake = G(self._noise(len(real)), labels)
            real_scores = D(self._noisy(real, noise_std), labels).float()
            fake_scores = D(self._noisy(fake.detach(), noise_std), labels).float()
            d_loss = loss.d_loss(real_scores, fake_scores)
        penalty = loss.penalty(D, real, fake.detach().float(), labels)
        if penalty is not None:
            d_loss = d_loss + penalty
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        g_loss = torch.zeros((), device=self.device)
        if g_step:
            D.requires_grad_(False)
            with self.autocast:
                fake = G(self._noise(len(real)), labels)  # the second G forward: a fresh batch
                g_loss = loss.g_loss(D(self._noisy(fake, noise_std), labels).float())
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self.opt_g.step()
            D.requires_grad_(True)
        return torch.stack([g_loss.detach(), d_loss.detach(), loss.output(real_scores.detach()).mean(),
                            loss.output(fake_scores.detach()).mean()])


def _untrained(config: dict[str, Any], data, device: torch.device) -> EvaluatorNet:
    return EvaluatorNet(data.channels, max(data.num_classes, 2)).to(device).eval()


def measure(trainer: str, overrides: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Median images/s of the reference and the trainer over args.repeats alternating epochs."""
    width = 32 if args.quick else 64
    config = gan.resolve(trainer, {
        "dataset": "mnist5k", "max_train": 512 if args.quick else 2048, "batch_size": 64, "epochs": 1,
        "eval_samples": 16, "sample_grid": 16, "device": args.device,
        **({"ngf": width, "ndf": width} if trainer == "dcgan" else {}), **overrides})
    with mock.patch.object(evaluator, "load_or_train", _untrained):
        tasks = {"reference": FreshFakes(config), "trainer": gan.GanTask(config)}
    batch = config["batch_size"]
    images = len(tasks["trainer"].data.train) // batch * batch  # drop_last
    rates: dict[str, list[float]] = {name: [] for name in tasks}
    for repeat in range(args.repeats + 1):  # the first round warms up (allocator, kernels, caches)
        for name, task in tasks.items():
            began = time.perf_counter()
            task.train_epoch(1)  # ends with a sync (the epoch's means are read back)
            if repeat:
                rates[name].append(images / (time.perf_counter() - began))
    paired = [t / r for r, t in zip(rates["reference"], rates["trainer"], strict=True)]  # same round
    return {"config": {k: config[k] for k in ("loss", "n_critic", "batch_size", "max_train", "device")},
            "images_per_epoch": images, "images_per_s": rates, "paired_ratios": paired,
            "median": {name: statistics.median(r) for name, r in rates.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.g_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller models, 512 images an epoch")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    parser.add_argument("--repeats", type=int, default=None, help="timed epochs per variant (3 quick, 5)")
    parser.add_argument("--json", type=Path, default=Path("runs/benchmarks/g_step.json"))
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 5)
    results = {}
    for name, (trainer, overrides) in CASES.items():
        print(f"{name}: {args.repeats} + 1 epochs each ...", file=sys.stderr, flush=True)
        results[name] = measure(trainer, overrides, args)
    rows = [(name, r["median"]["reference"], r["median"]["trainer"],
             f"{r['median']['trainer'] / r['median']['reference']:.2f}x",
             f"{min(r['paired_ratios']):.2f}-{max(r['paired_ratios']):.2f}x") for name, r in results.items()]
    device = runtime.device(args.device)
    print(f"\nimages/s, median of {args.repeats} epochs ({machine(device)['device']}, "
          f"{'quick' if args.quick else 'full'})\n")
    header = ("case", "fresh fakes for G (reference)", "fakes reused (trainer)", "speed-up",
              "per-round ratios")
    print(markdown_table(header, rows))
    write_json(args.json, {"benchmark": "g_step", "quick": args.quick, "repeats": args.repeats,
                           "machine": machine(device), "cases": results})
    print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
