"""Finding sweeps and their trial runs in MLflow (what `report` and `promote` read)."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from orchestrator.errors import LookupProblem
from orchestrator.tracking import tags


@dataclass
class Sweep:
    experiment_id: str
    experiment_name: str
    parent: Run

    @property
    def metric(self) -> str:
        return self.parent.data.tags.get(tags.METRIC, "fid")

    @property
    def mode(self) -> str:
        return self.parent.data.tags.get(tags.MODE, "min")


def latest_sweep(client: MlflowClient, experiment: str | None) -> Sweep:
    """The newest sweep of the named experiment, or of all experiments when none is named."""
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = sorted(e.name for e in client.search_experiments())
            raise LookupProblem(f"experiment {experiment!r} does not exist; there are: "
                                f"{', '.join(names) or 'none'}")
        experiments = [found]
    else:
        experiments = client.search_experiments()
    by_id = {e.experiment_id: e.name for e in experiments}
    runs = sweep_runs(client, list(by_id), max_results=1) if by_id else []
    if not runs:
        where = f"experiment {experiment!r}" if experiment else "this tracking store"
        raise LookupProblem(f"{where} has no sweep yet: run `python -m orchestrator sweep` first")
    parent = runs[0]
    return Sweep(parent.info.experiment_id, by_id[parent.info.experiment_id], parent)


def sweep_runs(client: MlflowClient, experiment_ids: list[str], newest_first: bool = True,
               max_results: int = 5000) -> list[Run]:
    """The parent runs of the sweeps of these experiments, by start time: the newest sweep is the
    first of them (what --resume continues, report and promote read), or the last with
    `newest_first=False` (the order --warm-start learns in)."""
    return client.search_runs(experiment_ids, filter_string=f"tags.`{tags.ROLE}` = 'sweep'",
                              order_by=[f"attributes.start_time {'DESC' if newest_first else 'ASC'}"],
                              max_results=max_results)


def newest_sweep_run(client: MlflowClient, experiment_id: str) -> Run | None:
    """The parent run of an experiment's newest sweep, or None."""
    found = sweep_runs(client, [experiment_id], max_results=1)
    return found[0] if found else None


def children(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    """The trial runs of one sweep."""
    return client.search_runs([experiment_id], max_results=5000,
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")


def varying_params(runs: list[Run]) -> list[str]:
    """The params whose values differ between runs: the ones worth a column."""
    names = sorted({name for run in runs for name in run.data.params})
    return [n for n in names if len({run.data.params.get(n) for run in runs}) > 1]
