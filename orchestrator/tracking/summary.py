"""The end of a sweep: its leaderboard read back from MLflow and logged, pictures, what to do next."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.tracking import MlflowClient

from orchestrator.space import objective
from orchestrator.space.search_space import SearchSpace, param_from_text
from orchestrator.tracking import mlflow_store, tags, ui_view
from orchestrator.tracking.leaderboard import Row, rank, table, to_csv
from orchestrator.tracking.runs import children
from trainers import catalog
from trainers.catalog import TrainerSpec

if TYPE_CHECKING:  # matplotlib is imported where the pictures are made
    import optuna


def ui_link(tracking_uri: str, experiment: str, parent: str) -> str:
    """The runs table of the sweep's experiment, opened on the sweep's ready view (ui_view)."""
    return ui_view.link(tracking_uri, experiment, ui_view.key_of(parent))


def study_of(rows: list[Row], space: SearchSpace) -> optuna.Study:
    """An Optuna study rebuilt from the finished runs, for Optuna's importance and coordinate plots."""
    import optuna

    distributions = space.optuna_distributions()
    study = optuna.create_study(direction=objective.direction(space.primary_mode))
    for row in rows:
        if not math.isfinite(row.value):
            continue
        run_params = row.run.data.params
        params = {}
        for name, dist in distributions.items():
            if name in run_params:
                params[name] = param_from_text(run_params[name], dist)
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={n: distributions[n] for n in params}, value=row.value))
    return study


def pictures(client: MlflowClient, rows: list[Row], space: SearchSpace, directory: Path) -> list[Path]:
    """Parameter importances, parallel coordinates, and the metric curves of the best trials."""
    import optuna

    plt = _pyplot()
    made = []
    metric = space.primary_metric
    best = [r for r in rows if math.isfinite(r.value)][:5]
    if best:
        fig, ax = plt.subplots(figsize=(7, 4))
        for row in best:
            history = sorted(client.get_metric_history(row.run_id, metric), key=lambda m: m.step)
            ax.plot([m.step for m in history], [m.value for m in history], marker="o", label=row.name)
        ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} of the best trials")
        ax.legend(fontsize=7)
        made.append(_save(fig, directory / "best_trials.png"))
    study = study_of(rows, space)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(finished) >= 2 and study.trials[0].distributions:
        import warnings

        from optuna.visualization import matplotlib as optuna_plots

        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

        for name, plot in (("param_importances.png", optuna_plots.plot_param_importances),
                           ("parallel_coordinate.png", optuna_plots.plot_parallel_coordinate)):
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as err:  # e.g. every trial had the same params
                print(f"note: no {name}: {err}")
                continue
            axes = ax if hasattr(ax, "figure") else ax.flat[0]
            made.append(_save(axes.figure, directory / name))
    return made


def pareto_front(points: dict[str, list[float]], modes: list[str]) -> list[str]:
    """The keys whose objective vectors no other point dominates (better or equal everywhere)."""
    signed = {key: [objective.sort_key(v, mode) for v, mode in zip(values, modes, strict=True)]
              for key, values in points.items()}

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    return [k for k, v in signed.items() if not any(dominates(o, v) for o in signed.values())]


def print_pareto_front(rows: list[Row], space: SearchSpace) -> None:
    points = {}
    for row in rows:
        metrics = row.run.data.metrics
        values = [metrics.get(m, math.nan) for m in space.metrics]
        if all(math.isfinite(v) for v in values):
            points[row.name] = values
    front = pareto_front(points, space.modes)
    objectives = ", ".join(f"{m} ({mode})" for m, mode in zip(space.metrics, space.modes, strict=True))
    print(f"\nPareto front over {objectives}:")
    for name in front:
        print(f"  {name}: " + ", ".join(f"{m} {v:.4g}" for m, v in zip(space.metrics, points[name],
                                                                       strict=True)))


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _pyplot():
    """pyplot on the Agg backend (files only, no display), set before pyplot or Optuna's plots load it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def best_metrics(row: Row, space: SearchSpace, spec: TrainerSpec) -> str:
    """The sweep's metric and the trainer's summary metrics (a classifier's val_acc and test_acc:
    test_acc is logged at the last epoch only, so n/a for a trial stopped early)."""
    names = list(dict.fromkeys([space.primary_metric, *spec.summary_metrics]))
    metrics = row.run.data.metrics
    return ", ".join(f"{m} {metrics[m]:.4g}" if m in metrics else f"{m} n/a" for m in names)


def finish(client: MlflowClient, experiment: str, parent: str, space: SearchSpace,
           tracking_uri: str) -> list[Row]:
    """Log the leaderboard and pictures to the parent run, print the table and the next steps."""
    metric, mode, spec = space.primary_metric, space.primary_mode, catalog.get(space.trainer)
    rows = rank(children(client, experiment, parent), metric, mode, list(space.params))
    client.log_text(parent, to_csv(rows, metric), "leaderboard.csv")
    with tempfile.TemporaryDirectory() as tmp:
        for picture in pictures(client, rows, space, Path(tmp)):
            client.log_artifact(parent, str(picture), "plots")
    print(f"\nLeaderboard ({metric}, {objective.better(mode)} is better):")
    print(table(rows[:20], metric))
    if len(space.metrics) > 1:
        print_pareto_front(rows, space)
    if rows and math.isfinite(rows[0].value):
        best = rows[0]
        client.log_metric(parent, f"best_{metric}", best.value)
        client.set_tag(parent, tags.BEST_RUN, best.run_id)
        print(f"\nBest trial: {best.name}: {best_metrics(best, space, spec)} (MLflow run {best.run_id})")
    if ui_view.read(client, experiment, ui_view.key_of(parent)) is None:  # a sweep begun before views
        ui_view.write(client, experiment, space, parent, client.get_run(parent).info.run_name)
    link = ui_link(tracking_uri, experiment, parent)
    if tracking_uri.startswith("http"):
        print(f"Runs, curves and sample grids: {link}")
    else:
        print(f"Runs, curves and sample grids: mlflow ui --backend-store-uri {tracking_uri}\n  then {link}")
    promote = f"python -m orchestrator promote {space.name}{mlflow_store.flag(tracking_uri)}"
    if spec.promoted == "generator":  # what `generate` samples from
        print(f"Promote the best generator: {promote}")
    else:
        print(f"Register the best {spec.promoted} as {space.name}-{spec.promoted}: {promote}")
    return rows
