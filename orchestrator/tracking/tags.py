"""Every MLflow tag gansweep writes, by name: the one place that spells them."""

# A sweep's parent run: what it ran and where its state lives (what --resume reads back).
ROLE = "gansweep.role"  # "sweep" on the parent run
SPACE_FILE, SPACE_HASH = "gansweep.space_file", "gansweep.space_hash"
GIT_COMMIT = "gansweep.git_commit"
SAMPLER, SCHEDULER = "gansweep.sampler", "gansweep.scheduler"
STORAGE, TUNE_NAME = "gansweep.storage", "gansweep.tune_name"
TRAINER = "gansweep.trainer"  # parent and child runs
METRIC, MODE = "gansweep.metric", "gansweep.mode"
BEST_RUN = "gansweep.best_run"
OVERRIDES = "gansweep.overrides"  # the --set values, as JSON (the space as it ran: effective_space.yaml)
WARM_START = "gansweep.warm_start"  # --warm-start: the parent runs of the sweeps it learned from
WARM_START_TRIALS, WARM_START_SKIPPED = "gansweep.warm_start.trials", "gansweep.warm_start.skipped"
WARM_START_OTHER_EVALUATOR = "gansweep.warm_start.other_evaluator"  # trials scored by another network
EVALUATORS = "gansweep.evaluators"  # the networks the sweep staged for its trials: {cache key: digest}

# A trial's child run: its identity, outcome and where it ran.
TRIAL_ID = "gansweep.trial_id"
STATUS = "gansweep.status"  # running, finished, stopped_early, collapsed, diverged, failed, lost
STOPPED_EARLY = "gansweep.stopped_early"
STOP_REASON = "gansweep.stop_reason"
ERROR = "gansweep.error"
RETRIES = "gansweep.retries"
MODEL_ERROR = "gansweep.model_error"
NODE, GPUS, PLACEMENTS = "gansweep.node_id", "gansweep.gpu_ids", "gansweep.placements"
EVALUATOR = "gansweep.evaluator"  # the digest of the evaluator network that scored the trial


SOURCE_PREFIX = "gansweep.source."


def source(key: str, given: str, resolved: str) -> dict[str, str]:
    """A model the sweep started from (config key `key`): as written, and what it named then
    (the registered version and run), on the parent run and on every trial's run."""
    return {f"{SOURCE_PREFIX}{key}": given, f"{SOURCE_PREFIX}{key}.resolved": resolved}


def sources_of(run_tags: dict[str, str]) -> dict[str, str]:
    """The source tags among a run's tags."""
    return {tag: value for tag, value in run_tags.items() if tag.startswith(SOURCE_PREFIX)}


def warm_start(sweeps: list[str], trials: int, skipped: int, other_evaluator: int) -> dict[str, str]:
    """What a --warm-start sweep learned from: the earlier sweeps' parent runs (comma-separated, the newest
    200: a tag holds 8000 characters), how many of their trials it was given, how many did not fit its
    space, and how many were scored by another evaluator network."""
    return {WARM_START: ",".join(sweeps[-200:]), WARM_START_TRIALS: str(trials),
            WARM_START_SKIPPED: str(skipped), WARM_START_OTHER_EVALUATOR: str(other_evaluator)}


def config_from_epoch(epoch: int) -> str:
    """PBT's new hyperparameters, in effect from this epoch on (params are immutable)."""
    return f"gansweep.config_from_epoch_{epoch:03d}"


# A registered model made by `promote`: the experiment that owns the name.
OWNER = "gansweep.experiment"
