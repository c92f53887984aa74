"""The classification task that the classifier, transfer and augment trainers share (a `loop.Task`).

The trainers differ only in the model and the training set they hand it. A model with a `backbone`
(a discriminator with a new head) keeps it frozen for the first `freeze_epochs` epochs: no
gradients, and in eval mode so its batch-norm statistics stay those it was trained with.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers import data as datasets
from trainers import loop, optim, plots, runtime
from trainers.data import ImageData, Split

Shape = tuple[int, int, int]  # channels, image size, classes
SCHEDULES = ("none", "cosine", "step")
EVAL_BATCH = 500


class ClassifyTask:
    """Cross-entropy training; val_loss/val_acc every epoch, test_acc after the last one."""

    def __init__(self, config: dict[str, Any], make_model: Callable[[Shape], nn.Module],
                 make_train_set: Callable[[ImageData, torch.device], Split]):
        self.config, self.epochs = config, config["epochs"]
        self.freeze_epochs = config.get("freeze_epochs", 0)
        self.device = runtime.device(config["device"])
        self.autocast = runtime.autocast(config, self.device)
        runtime.seed_everything(config["seed"])
        self.data = datasets.load(config, self.device)
        self.shape: Shape = (self.data.channels, self.data.image_size, self.data.num_classes)
        self.model = make_model(self.shape).to(self.device)
        if config["channels_last"]:
            self.model.to(memory_format=torch.channels_last)
        self.backbone: nn.Module | None = getattr(self.model, "backbone", None)
        self.train_set = make_train_set(self.data, self.device)
        self.optimizer = optim.build(config["optimizer"], self.model.parameters(), config["lr"],
                                     config["beta1"], config["beta2"], config["weight_decay"])
        self.confusion: tuple[torch.Tensor, str] | None = None  # of the last evaluation, for the picture

    # -- training ---------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        frozen = epoch <= self.freeze_epochs
        self.model.train()
        if self.backbone is not None:
            self.backbone.requires_grad_(not frozen)
            if frozen:
                self.backbone.eval()
        for group in self.optimizer.param_groups:  # from the config each epoch: exact on resume, PBT-safe
            group["lr"] = self.learning_rate(epoch)
        sums = torch.zeros(2, device=self.device)  # summed loss, correct predictions
        seen = 0
        for images, labels in self.train_set.batches(self.config["batch_size"], shuffle=True, drop_last=True):
            with self.autocast:
                logits = self.model(self._layout(images)).float()
            loss = F.cross_entropy(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            sums += torch.stack([loss.detach() * len(labels), (logits.argmax(1) == labels).sum().float()])
            seen += len(labels)
        loss_sum, correct = sums.tolist()
        metrics = {"train_loss": loss_sum / seen, "train_acc": correct / seen}
        loop.check_finite(metrics, epoch)
        return metrics

    def learning_rate(self, epoch: int) -> float:
        """lr (finetune_lr once the backbone is unfrozen, if set) times the schedule's factor."""
        finetune = self.config.get("finetune_lr")
        base = finetune if finetune and epoch > self.freeze_epochs else self.config["lr"]
        schedule, progress = self.config["lr_schedule"], (epoch - 1) / self.epochs
        if schedule == "cosine":
            return base * 0.5 * (1 + math.cos(math.pi * progress))
        if schedule == "step":  # x0.1 after half and after three quarters of the epochs
            return base * 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
        return base

    def _layout(self, images: torch.Tensor) -> torch.Tensor:
        if self.config["channels_last"]:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, epoch: int) -> dict[str, float]:
        loss, accuracy, counts = self.score(self.data.val)
        metrics = {"val_loss": loss, "val_acc": accuracy}
        self.confusion = (counts, f"validation, epoch {epoch}")
        if epoch == self.epochs:  # the test set is looked at once, at the end
            _, metrics["test_acc"], counts = self.score(self.data.test)
            self.confusion = (counts, f"test, epoch {epoch}")
        return metrics

    @torch.no_grad()
    def score(self, split: Split) -> tuple[float, float, torch.Tensor]:
        """Mean loss, accuracy and the confusion counts [true, predicted] of the model on a split."""
        self.model.eval()
        k = self.data.num_classes
        loss = torch.zeros((), device=self.device)
        counts = torch.zeros(k * k, dtype=torch.long, device=self.device)
        for images, labels in split.batches(EVAL_BATCH, shuffle=False):
            with self.autocast:
                logits = self.model(self._layout(images)).float()
            loss += F.cross_entropy(logits, labels, reduction="sum")
            counts += torch.bincount(labels * k + logits.argmax(1), minlength=k * k)
        counts = counts.view(k, k).cpu()
        total = max(int(counts.sum()), 1)
        return loss.item() / total, counts.diagonal().sum().item() / total, counts

    def write_artifacts(self, directory: Path, epoch: int) -> None:
        if self.confusion is not None:
            plots.confusion_matrix(*self.confusion, directory / "confusion_matrix.png")

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "shape": list(self.shape)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
