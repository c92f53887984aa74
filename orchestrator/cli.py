"""`python -m orchestrator sweep ...`: the command line of gansweep.

Each command imports what it needs (Optuna, Ray, MLflow, torch) inside its own function, so that
`--help` and the light commands answer at once (tests/test_imports.py guards it).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import GansweepError, LookupProblem, UsageError
from orchestrator.space import objective
from orchestrator.tracking import mlflow_store

if TYPE_CHECKING:
    from orchestrator.space.search_space import SearchSpace

QUICKSTART = Path(__file__).resolve().parent.parent / "search_spaces" / "quickstart.yaml"


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

    from orchestrator.space.run_names import trial_label

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if space.is_pbt:
        return "PBT: the initial population is sampled by Tune from the params above."
    study = optuna.create_study(sampler=space.optuna_sampler(),
                                directions=[objective.direction(m) for m in space.modes])
    if space.sampler.type != "grid":  # a grid's sampler puts start_from first itself
        for point in space.start_from:
            study.enqueue_trial(space.optuna_point(point))  # as OptunaSearch does (sweep.searcher)
    lines = [f"First {min(n, space.num_samples)} of {space.num_samples} trials "
             f"(each {space.resources.cpu:g} CPU, {space.resources.gpu:g} GPU):"]
    shown: list[dict] = []
    for index in range(1, min(n, space.num_samples) + 1):
        trial = study.ask()
        returned = space.define_by_run(trial)  # list-valued choices as lists, as a trial's config has them
        config = {**trial.params, **{name: value for name, value in returned.items() if name in space.params}}
        lines.append(f"  {space.run_name(trial_label(index), config, shown)}")
        shown.append(config)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return "\n".join(lines)


def sweep(args: argparse.Namespace) -> int:
    from orchestrator.space.loading import load_space, parse_overrides
    from orchestrator.sweep import model_sources, warm_start
    from orchestrator.sweep import run as sweeps  # imports Ray: only once the input is known good

    overrides = parse_overrides(args.set)
    space = load_space(args.space or QUICKSTART, overrides)
    space = space.with_overrides(args.num_samples, args.max_concurrent)
    if args.warm_start and (problem := warm_start.problem(space, args.resume)):
        raise UsageError(problem)
    budget = parse_duration(args.time_budget)
    tracking_uri = mlflow_store.tracking_uri(args.tracking_uri)
    print(space.describe())
    if args.dry_run:
        print(preview(space))
        with tempfile.TemporaryDirectory() as workdir:
            for source in model_sources.resolve(space, tracking_uri, Path(workdir)):
                print(f"{source.key}: {source.given} is {source.resolved}")
        print("Dry run: nothing started.")
        return 0
    return sweeps.run(space, address=args.address, storage=args.storage, tracking_uri=tracking_uri,
                      resume=args.resume, time_budget_s=budget, warm=args.warm_start)


def report(args: argparse.Namespace) -> int:
    from orchestrator.tracking import leaderboard, runs

    client = mlflow_store.connect(mlflow_store.tracking_uri(args.tracking_uri), create=False)
    sweep = runs.latest_sweep(client, args.experiment)
    metric, mode = args.metric or sweep.metric, args.mode or sweep.mode
    trials = runs.children(client, sweep.experiment_id, sweep.parent.info.run_id)
    if trials and not any(metric in r.data.metrics for r in trials):
        known = sorted({m for r in trials for m in r.data.metrics})
        raise LookupProblem(f"no run of this sweep has metric {metric!r}; they have: {', '.join(known)}")
    rows = leaderboard.rank(trials, metric, mode, runs.varying_params(trials))
    print(f"{sweep.experiment_name}: {sweep.parent.info.run_name} ({len(rows)} trials, "
          f"{metric} {objective.better(mode)} is better)")
    print(leaderboard.table(rows[: args.top], metric))
    if args.csv:
        args.csv.write_text(leaderboard.to_csv(rows, metric))
        print(f"wrote {args.csv}")
    return 0


def promote(args: argparse.Namespace) -> int:
    from orchestrator.registry import promotion
    from orchestrator.tracking import runs

    tracking_uri = mlflow_store.tracking_uri(args.tracking_uri)
    client = mlflow_store.connect(tracking_uri, create=False)
    if args.rollback:
        if not (args.name or args.experiment):
            raise UsageError("--rollback needs the experiment or --name of the registered model")
        name = args.name or promotion.registered_name(runs.latest_sweep(client, args.experiment))
        print(promotion.rollback(client, name))
        return 0
    sweep = runs.latest_sweep(client, args.experiment)
    promoted = promotion.promote(client, sweep, args.name or promotion.registered_name(sweep),
                                 args.metric or sweep.metric, args.mode or sweep.mode, args.force)
    print(promoted.message)
    for line in promotion.next_steps(promoted, mlflow_store.flag(tracking_uri)):
        print(line)
    return 0


def generate(args: argparse.Namespace) -> int:
    from orchestrator.registry import stored_models

    client = mlflow_store.connect(mlflow_store.tracking_uri(args.tracking_uri), create=False)
    height, width = stored_models.generate(client, args.model_uri, args.n, args.out, args.seed)
    print(f"wrote {args.out}: {args.n} samples of {height}x{width} from {args.model_uri}")
    return 0


def ui(args: argparse.Namespace) -> int:
    """The newest sweep's ready view: `mlflow ui` started on a local store, or the server's link."""
    import signal

    from orchestrator.tracking import ui_view

    tracking_uri = mlflow_store.tracking_uri(args.tracking_uri)
    client = mlflow_store.connect(tracking_uri, create=False)
    if mlflow_store.is_server(tracking_uri):
        print(f"Runs, curves and sample grids: {ui_view.newest_link(client, tracking_uri, args.experiment)}")
        return 0
    port = args.port or ui_view.free_port()
    link = ui_view.newest_link(client, f"http://127.0.0.1:{port}", args.experiment)
    print(f"starting mlflow ui on {tracking_uri} (port {port}) ...", flush=True)
    server = ui_view.serve(tracking_uri, port)
    print(f"Runs, curves and sample grids: {link}\nStop it with Ctrl-C.", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops the server as Ctrl-C does
    try:
        return server.wait()
    except KeyboardInterrupt:  # the terminal sent SIGINT to the server too
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait()


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
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change the space without editing it, checked like the file: a trainer value "
                        "(fixed; pins a param of that name) or a field such as resources.gpu or num_samples. "
                        "VALUE is YAML: --set epochs=20 --set resources.gpu=0 "
                        "--set 'source={champion: NAME, part: discriminator}'. Repeat for several")
    s.add_argument("--num-samples", type=int, help="number of trials (overrides the space)")
    s.add_argument("--max-concurrent", type=int, help="trials running at once (overrides the space)")
    s.add_argument("--storage", help="where checkpoints and Tune state go: s3://bucket/path or a folder "
                                     "every node shares (default: $GANSWEEP_STORAGE, else ./sweeps)")
    s.add_argument("--tracking-uri", help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                                          f"{mlflow_store.DEFAULT_TRACKING_URI})")
    s.add_argument("--resume", action="store_true",
                   help="continue the newest interrupted sweep of this space from its storage")
    s.add_argument("--warm-start", action="store_true",
                   help="sampler tpe: learn from the finished trials of this experiment's earlier sweeps "
                        "(read from MLflow; those outside today's space are skipped)")
    s.add_argument("--time-budget", help="stop starting and running trials after this long, e.g. 2h")
    s.add_argument("--dry-run", action="store_true", help="validate, show the first trials, start nothing")
    s.set_defaults(func=sweep)

    def tracking(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tracking-uri", help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                                              f"{mlflow_store.DEFAULT_TRACKING_URI})")

    r = commands.add_parser("report", help="rank the trials of a sweep (read from MLflow)")
    r.add_argument("experiment", nargs="?", help="experiment (space name); default: the newest sweep")
    r.add_argument("--top", type=int, default=20, help="rows to show (default 20)")
    r.add_argument("--metric", help="rank by this metric (default: the sweep's)")
    r.add_argument("--mode", choices=["min", "max"], help="lower or higher is better (default: the sweep's)")
    r.add_argument("--csv", type=Path, help="also write the whole table to this CSV file")
    tracking(r)
    r.set_defaults(func=report)

    p = commands.add_parser("promote", help="register the best model of a sweep as @champion: the generator "
                                             "of a GAN sweep, the classifier of a classifier sweep")
    p.add_argument("experiment", nargs="?", help="experiment (space name); default: the newest sweep")
    p.add_argument("--metric", help="rank by this metric (default: the sweep's)")
    p.add_argument("--mode", choices=["min", "max"], help="lower or higher is better (default: the sweep's)")
    p.add_argument("--name", help="registered model name (default: EXPERIMENT-generator, or "
                                  "EXPERIMENT-classifier for a classifier, transfer or augment sweep)")
    p.add_argument("--force", action="store_true", help="promote even if the champion is as good or better")
    p.add_argument("--rollback", action="store_true", help="move @champion back to @previous")
    tracking(p)
    p.set_defaults(func=promote)

    g = commands.add_parser("generate", help="write a sample grid from a registered generator")
    g.add_argument("model_uri", nargs="?", default="models:/quickstart-generator@champion",
                   help="an MLflow model URI (default: models:/quickstart-generator@champion)")
    g.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    g.add_argument("--out", type=Path, default=Path("grid.png"), help="PNG to write (default grid.png)")
    g.add_argument("--seed", type=int, default=0)
    tracking(g)
    g.set_defaults(func=generate)

    u = commands.add_parser("ui", help="open the newest sweep's ready view: starts `mlflow ui` on a local "
                                       "store, or prints the link of the server given by --tracking-uri")
    u.add_argument("experiment", nargs="?", help="experiment (space name); default: the newest sweep")
    u.add_argument("--port", type=int, help="port of the local `mlflow ui` (default: a free one)")
    tracking(u)
    u.set_defaults(func=ui)

    c = commands.add_parser("check-cluster", help="check a Ray cluster launcher config before `ray up`",
                            description="Ray's own launcher validation (what `ray up` runs, without "
                                        "calling the cloud) and gansweep's rules: a head that takes no "
                                        "trial, GPU workers, spot with an on-demand fallback, token auth.")
    c.add_argument("cluster_yaml", nargs="?", type=Path, default=Path("cluster.yaml"),
                   help="the cluster config (default: cluster.yaml)")
    c.set_defaults(func=check_cluster)
    return top


def check_cluster(args: argparse.Namespace) -> int:
    from orchestrator.cluster.config_check import check_command

    return check_command(args.cluster_yaml)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except GansweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
