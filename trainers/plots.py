"""Pictures a trainer writes next to its checkpoint (the GAN sample grid is torchvision's save_image)."""

from __future__ import annotations

from pathlib import Path

import torch

ANNOTATE_UP_TO = 20  # classes; beyond that the counts would not be readable


def confusion_matrix(counts: torch.Tensor, title: str, path: Path) -> None:
    """counts[true, predicted] as a heat map with the counts written in (report 000, figure 15)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display backend

    counts = counts.cpu()
    k = len(counts)
    side = min(2.0 + 0.45 * k, 12.0)
    figure = Figure(figsize=(side, side))
    axes = figure.subplots()
    axes.imshow(counts.numpy(), cmap="Blues")
    axes.set(title=title, xlabel="predicted", ylabel="true", xticks=range(k), yticks=range(k))
    if k <= ANNOTATE_UP_TO:
        dark = counts.max().item() / 2
        for true, row in enumerate(counts.tolist()):
            for predicted, value in enumerate(row):
                axes.text(predicted, true, str(value), ha="center", va="center", fontsize=8,
                          color="white" if value > dark else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
