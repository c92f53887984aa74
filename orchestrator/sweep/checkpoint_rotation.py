"""Old checkpoints go only once the experiment snapshot in storage no longer needs them.

`--resume` restores each trial from the checkpoint that Tune's experiment snapshot in the sweep's
storage names. Tune's own rotation (`CheckpointConfig(num_to_keep)`) deletes a checkpoint as soon as
a newer one arrives, while the snapshot, written every few seconds to minutes, may still name it: a
driver killed in between leaves that trial unable to resume. So Tune keeps every checkpoint and this
callback deletes a trial's older ones itself, sparing the `keep` newest and every one from the one
the previous stored snapshot named on.
"""

from __future__ import annotations

import re

import pyarrow.fs
from ray import tune

from orchestrator.library_internals import snapshot_checkpoints

CHECKPOINT = re.compile(r"checkpoint_(\d+)$")


class CheckpointRotation(tune.Callback):
    def __init__(self, keep: int):
        self.keep = keep
        self.named: dict[str, list[int]] = {}  # trial id -> the checkpoints stored snapshots named

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        fs = checkpoint.filesystem
        trial_dir = checkpoint.path.rsplit("/", 1)[0]
        experiment_dir = trial_dir.rsplit("/", 1)[0]
        named = self.named.setdefault(trial.trial_id, [])
        try:
            now = snapshot_checkpoints(fs, experiment_dir).get(trial.trial_id)
        except (OSError, ValueError):
            return  # a snapshot caught in the middle of its upload: rotate at the next checkpoint
        if now is not None and (not named or now > named[-1]):
            named.append(now)
        # Tune uploads snapshots in the background: the stored one may still be overwritten by the
        # previous one. So only checkpoints older than the previous snapshot's are surely unneeded.
        if len(named) < 2:
            return
        for index in sorted(checkpoint_indices(fs, trial_dir))[:-self.keep]:
            if index < named[-2]:
                fs.delete_dir(f"{trial_dir}/checkpoint_{index:06d}")
        del named[:-2]


def checkpoint_indices(fs: pyarrow.fs.FileSystem, trial_dir: str) -> list[int]:
    found = fs.get_file_info(pyarrow.fs.FileSelector(trial_dir, allow_not_found=True))
    return [int(m.group(1)) for info in found
            if info.type == pyarrow.fs.FileType.Directory and (m := CHECKPOINT.search(info.path))]
