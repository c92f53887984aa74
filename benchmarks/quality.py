"""Does the quickstart find a better generator than the standard recipe in the same time?

The quickstart sweep (`python -m orchestrator sweep`, its champion promoted) against the standard
DCGAN recipe trained once on the same mnist5k digits, on the same machine, for no longer than the
whole sweep took: pytorch/examples' DCGAN (noise 64, G 256/128 channels, D 64/128 with batch
norm), BCE, Adam lr 2e-4, beta1 0.5, batch 64.

Both are judged by a network the sweep never used, on images it never saw: a LeNet-5 trained here
on the training split (the sweep's FID uses its own evaluator network), its 84 penultimate features
for the FID against the 500 digits of the held-out test split, and its class predictions for the
inception score and the share of the 10 classes drawn. Real validation digits against the same
test digits give the floor (what a perfect generator would score with this many images).

    python -m benchmarks quality            # about 5 minutes on 2 CPUs
    python -m benchmarks quality --quick    # a smoke run: 2 trials, 1 epoch
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.report import machine, markdown_table, write_json
from trainers import checkpoint, data, gan
from trainers.models.classifiers import build_classifier

SAMPLES = 500  # generated images per generator: as many as the test split holds
RECIPE = {"dataset": "mnist5k", "image_size": 28, "noise_dim": 64, "ngf": 128, "ndf": 64, "d_norm": "batch",
          "loss": "bce", "lr": 2e-4, "beta1": 0.5, "batch_size": 64, "eval_samples": 100, "epochs": 100}
JUDGE_EPOCHS = 15


class BudgetSpent(Exception):
    """Raised by the recipe's report hook once its time is up."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 quickstart trials of 1 epoch: a smoke run")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"),
                        help="where the picture and the JSON go (default: runs/benchmarks)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    images = data.load({**data.DEFAULTS, "dataset": "mnist5k", "split_seed": 0}, torch.device("cpu"))
    test_images, _ = images.test.take(SAMPLES)

    print("1/4 the judge: LeNet-5 on the training split", file=sys.stderr)
    judge, judge_acc = train_judge(images)
    with tempfile.TemporaryDirectory(prefix="gansweep-quality-") as work:
        print("2/4 the quickstart sweep (its champion promoted)", file=sys.stderr)
        champion, sweep_s, champion_name = quickstart_champion(Path(work), args.quick)
        print(f"3/4 the standard recipe, for at most {sweep_s:.0f} s", file=sys.stderr)
        recipe, recipe_epochs, recipe_s = train_recipe(sweep_s)
    print("4/4 judging", file=sys.stderr)
    real_val, _ = images.val.take(SAMPLES)
    generators = {f"standard recipe ({recipe_epochs} epochs, {recipe_s:.0f} s)": recipe,
                  f"quickstart champion ({champion_name}; sweep {sweep_s:.0f} s)": champion}
    scores = {"real digits (validation split)": judged(judge, real_val, test_images)}
    scores.update({name: judged(judge, sample(g), test_images) for name, g in generators.items()})
    header = ["generator", "judge FID (lower is better)", "judge IS", "classes drawn"]
    rows = [[name, s["fid"], s["inception_score"], f"{s['classes']}/10"] for name, s in scores.items()]
    table = markdown_table(header, rows)
    print(f"\nJudge: LeNet-5, test accuracy {judge_acc:.1%}; FID on its 84 features against the "
          f"{len(test_images)} test digits\n\n{table}")
    picture = args.out / "quality.png"
    side_by_side({name.split(" (")[0]: sample(g, 64) for name, g in generators.items()}, picture)
    write_json(args.out / "quality.json", {"machine": machine(torch.device("cpu")), "quick": args.quick,
                                           "judge_test_acc": judge_acc, "scores": scores})
    print(f"\nwrote {picture} and {args.out / 'quality.json'}")
    return 0


# -- the judge ---------------------------------------------------------------------------------------
def train_judge(images: data.ImageData) -> tuple[nn.Sequential, float]:
    """LeNet-5 (not the sweep's evaluator) trained on the training split; its test accuracy."""
    torch.manual_seed(1)
    model = build_classifier("lenet5", 1, 28, images.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(JUDGE_EPOCHS):
        model.train()
        for x, y in images.train.batches(64, shuffle=True):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    model.eval()
    x, y = images.test.take(len(images.test))
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    return model, accuracy


@torch.no_grad()
def judged(judge: nn.Sequential, fake: torch.Tensor, real: torch.Tensor) -> dict[str, Any]:
    """FID on the judge's penultimate features, its inception score and the classes it sees drawn."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    features = Features(judge)
    fid = FrechetInceptionDistance(feature=features, normalize=True)
    fid.update(real.add(1).div(2), real=True)
    fid.update(fake.add(1).div(2), real=False)
    probs = judge(fake).softmax(1)
    marginal = probs.mean(0, keepdim=True)
    inception = (probs * (probs.log() - marginal.log())).sum(1).mean().exp().item()
    return {"fid": float(fid.compute()), "inception_score": inception,
            "classes": int((probs.argmax(1).bincount(minlength=probs.shape[1]) > 0).sum())}


class Features(nn.Module):
    """The judge up to its last layer, as torchmetrics' FID wants a feature extractor: images in
    [0, 1] -> (N, 84)."""

    def __init__(self, judge: nn.Sequential):
        super().__init__()
        self.body, self.num_features = judge[:-1], judge[-1].in_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images.float() * 2 - 1)


# -- the two generators -------------------------------------------------------------------------------
def quickstart_champion(work: Path, quick: bool) -> tuple[nn.Module, float, str]:
    """Run the quickstart as a user would, promote its best trial; its generator and the wall time."""
    import mlflow

    from orchestrator.registry import stored_models
    from orchestrator.tracking import mlflow_store

    uri = f"sqlite:///{work}/mlflow.db"
    sweep = [sys.executable, "-m", "orchestrator", "sweep", "--tracking-uri", uri,
             "--storage", str(work / "sweeps")]
    if quick:
        sweep += ["--num-samples", "2", "--set", "epochs=1", "--set", "scheduler.max_t=1",
                  "--set", "scheduler.grace_period=1"]
    began = time.perf_counter()
    subprocess.run(sweep, check=True, cwd=work)
    seconds = time.perf_counter() - began
    subprocess.run([sys.executable, "-m", "orchestrator", "promote", "quickstart", "--tracking-uri", uri],
                   check=True, cwd=work)
    client = mlflow_store.connect(uri, create=False)
    version = client.get_model_version_by_alias("quickstart-generator", "champion")
    folder = stored_models.download(client, "models:/quickstart-generator@champion", work / "champion")
    generator = mlflow.pytorch.load_model(str(folder), map_location="cpu").eval()
    return generator, seconds, version.tags["run_name"].split()[0]


def train_recipe(budget_s: float) -> tuple[nn.Module, int, float]:
    """The standard recipe through gansweep's own DCGAN trainer, stopped at the last epoch that ended
    within budget_s (the first one if even that ran over)."""
    kept: dict[str, Any] = {}
    began = time.perf_counter()

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        elapsed = time.perf_counter() - began
        if kept and elapsed > budget_s:
            raise BudgetSpent
        kept.update(state=checkpoint.load(checkpoint_dir)["task"], epoch=metrics["epoch"], seconds=elapsed)
        print(f"  recipe epoch {metrics['epoch']}: {elapsed:.0f} s, evaluator fid {metrics['fid']:.1f}",
              file=sys.stderr)

    with contextlib.suppress(BudgetSpent):
        gan.train_dcgan(dict(RECIPE), report)
    config = gan.resolve("dcgan", RECIPE)
    generator = gan.export_models("dcgan", config, kept["state"])["generator"]
    return generator, kept["epoch"], kept["seconds"]


@torch.no_grad()
def sample(generator: nn.Module, n: int = SAMPLES) -> torch.Tensor:
    noise = torch.randn(n, generator.noise_dim, generator=torch.Generator().manual_seed(0))
    return generator(noise, None).clamp(-1, 1)


def side_by_side(grids: dict[str, torch.Tensor], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    fig, axes = plt.subplots(1, len(grids), figsize=(5 * len(grids), 5.4))
    for ax, (title, images) in zip(axes, grids.items(), strict=True):
        ax.imshow(make_grid(images, nrow=8, normalize=True, value_range=(-1, 1)).permute(1, 2, 0))
        ax.set_title(title)
        ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
