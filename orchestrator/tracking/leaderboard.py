"""A sweep's trial runs ranked best first, as a table and as CSV (`report`, the end of a sweep)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

from mlflow.entities import Run

from orchestrator.space import objective
from orchestrator.space.run_names import MAX_DIGITS, number
from orchestrator.sweep.outcome import can_be_best
from orchestrator.tracking import tags


@dataclass
class Row:
    rank: int
    name: str
    value: float
    status: str
    epochs: int
    params: dict[str, str]
    run_id: str
    run: Run  # as searched: every param and latest metric, no second fetch
    beside: dict[str, float]  # metrics shown next to the ranking one (test_acc beside val_acc)


def beside(metric: str) -> list[str]:
    """Metrics worth a column next to the ranking one: a classifier family is chosen by val_acc and
    compared on test_acc (logged at the last epoch only)."""
    return ["test_acc"] if metric == "val_acc" else []


def rank(runs: list[Run], metric: str, mode: str, params: list[str]) -> list[Row]:
    """Trial runs best first by metric (runs without it, then collapsed ones, last)."""
    def key(run: Run) -> tuple[bool, bool, float]:
        value = run.data.metrics.get(metric)
        unusable = not can_be_best(run.data.tags.get(tags.STATUS, ""))
        return (unusable, value is None or not math.isfinite(value), objective.sort_key(value or 0.0, mode))

    ranked = sorted(runs, key=key)
    columns = {p: shown_column([run.data.params.get(p, "") for run in ranked]) for p in params}
    return [Row(rank=i, name=run.info.run_name, value=run.data.metrics.get(metric, math.nan),
                status=run.data.tags.get(tags.STATUS, run.info.status.lower()),
                epochs=int(run.data.metrics.get("epoch", 0)),
                params={p: columns[p][i - 1] for p in params}, run_id=run.info.run_id,
                run=run, beside={m: run.data.metrics.get(m, math.nan) for m in beside(metric)})
            for i, run in enumerate(ranked, 1)]


def shown_column(texts: list[str]) -> list[str]:
    """A param's values as MLflow keeps them (strings), floats cut to 3 significant digits, or more
    where fewer would show two different values alike (or a value as another: 0.999 is not 1)."""
    def short(text: str, digits: int) -> str:
        try:
            value = float(text)
        except ValueError:
            return text
        return text if value.is_integer() and "." not in text else number(value, digits)

    for digits in range(3, MAX_DIGITS + 1):
        shown = [short(text, digits) for text in texts]
        if len(set(shown)) == len(set(texts)):
            return shown
    return shown


def table(rows: list[Row], metric: str) -> str:
    header = ["rank", "run", metric, *beside(metric), "status", "epochs", *(rows[0].params if rows else []),
              "run id"]
    lines = [[str(r.rank), r.name, f"{r.value:.4g}", *(f"{v:.4g}" for v in r.beside.values()), r.status,
              str(r.epochs), *r.params.values(), r.run_id] for r in rows]
    widths = [max([len(h), *(len(line[i]) for line in lines)]) for i, h in enumerate(header)]  # also no rows
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), *(fmt.format(*line) for line in lines)])


def to_csv(rows: list[Row], metric: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["rank", "run", metric, *beside(metric), "status", "epochs",
                     *(rows[0].params if rows else []), "run_id"])
    for r in rows:
        writer.writerow([r.rank, r.name, r.value, *r.beside.values(), r.status, r.epochs, *r.params.values(),
                         r.run_id])
    return out.getvalue()


