"""`python -m orchestrator sweep ...`: the command line of gansweep."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from orchestrator.space import SearchSpace, SpaceError, load_space

QUICKSTART = Path(__file__).resolve().parent.parent / "search_spaces" / "quickstart.yaml"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


class UsageError(Exception):
    """Bad input found before anything started: printed as is, exit code 2."""


def parse_duration(text: str | None) -> float | None:
    """'2h', '90m', '1h30m', '45s' or plain seconds -> seconds."""
    if text is None:
        return None
    number = r"(\d+(?:\.\d+)?)"
    match = re.fullmatch(rf"\s*(?:{number}h)?\s*(?:{number}m)?\s*(?:{number}s?)?\s*", text)
    if not text.strip() or not match or not any(match.groups()):
        raise UsageError(f"--time-budget {text!r}: expected a duration like 2h, 90m, 1h30m or 600")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise UsageError(f"--time-budget {text!r}: must be longer than 0")
    return total


def preview(space: SearchSpace, n: int = 10) -> str:
    """The first trials the sampler would start, with their resources (for --dry-run)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if space.scheduler.type == "pbt":
        return "PBT: the initial population is sampled by Tune from the params above."
    study = optuna.create_study(sampler=space.optuna_sampler(),
                                directions=["minimize" if m == "min" else "maximize" for m in space.modes])
    lines = [f"First {min(n, space.num_samples)} of {space.num_samples} trials "
             f"(each {space.resources.cpu:g} CPU, {space.resources.gpu:g} GPU):"]
    for index in range(1, min(n, space.num_samples) + 1):
        trial = study.ask()
        space.define_by_run(trial)
        lines.append(f"  {space.run_name(index, trial.params)}")
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return "\n".join(lines)


def sweep(args: argparse.Namespace) -> int:
    from orchestrator import sweep as sweeps  # imports Ray: only once the input is known good

    space = load_space(args.space or QUICKSTART).with_overrides(args.num_samples, args.max_concurrent)
    budget = parse_duration(args.time_budget)
    print(space.describe())
    if args.dry_run:
        print(preview(space))
        print("Dry run: nothing started.")
        return 0
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    return sweeps.run(space, address=args.address, storage=args.storage, tracking_uri=tracking_uri,
                         resume=args.resume, time_budget_s=budget)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m orchestrator",
        description="gansweep: GAN and classifier sweeps on Ray Tune + Optuna + MLflow")
    commands = top.add_subparsers(dest="command", required=True)
    s = commands.add_parser("sweep", help="run a search space as a Ray Tune sweep",
                            description="Run a search space: Optuna proposes, Ray Tune runs and stops "
                                        "trials, MLflow records one run per trial under one sweep run.")
    s.add_argument("space", nargs="?", type=Path, help=f"search-space YAML (default: {QUICKSTART.name})")
    s.add_argument("--address", help="Ray cluster to join: 'auto' on the head node, or HOST:PORT "
                                     "(default: start a local Ray instance)")
    s.add_argument("--num-samples", type=int, help="number of trials (overrides the space)")
    s.add_argument("--max-concurrent", type=int, help="trials running at once (overrides the space)")
    s.add_argument("--storage", help="where checkpoints and Tune state go: a folder shared by the "
                                     "nodes or s3://bucket/path (default: ./sweeps)")
    s.add_argument("--tracking-uri", help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                                          f"{DEFAULT_TRACKING_URI})")
    s.add_argument("--resume", action="store_true",
                   help="continue the newest interrupted sweep of this space from its storage")
    s.add_argument("--time-budget", help="stop starting and running trials after this long, e.g. 2h")
    s.add_argument("--dry-run", action="store_true", help="validate, show the first trials, start nothing")
    s.set_defaults(func=sweep)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (SpaceError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
