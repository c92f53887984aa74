"""The report hook the trainer tests share."""

from __future__ import annotations

import shutil


class Recorder:
    """A report hook that keeps every report and copies of the checkpoints it is handed."""

    def __init__(self, tmp_path, stop_after: int | None = None):
        self.tmp_path, self.stop_after = tmp_path, stop_after
        self.metrics, self.checkpoints = [], []

    def __call__(self, metrics, checkpoint_dir):
        self.metrics.append(metrics)
        if checkpoint_dir:
            kept = self.tmp_path / f"ckpt{metrics['epoch']}"
            shutil.copytree(checkpoint_dir, kept)
            self.checkpoints.append(kept)
        if self.stop_after and metrics["epoch"] == self.stop_after:
            raise KeyboardInterrupt("simulated kill after the checkpoint was reported")
