"""What every benchmark ends with: a markdown table on stdout and the same numbers as JSON.

Each benchmark module has `tables(quick: bool, device: str) -> list[Table]` (what
`python -m benchmarks` runs, one after another) and `main(argv) -> int` (to run it alone).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Table:
    """One table of figures: rows of rates or ratios measured side by side in the same run."""
    name: str  # short key, also the JSON key: "throughput", "packing", ...
    title: str  # one line above the table, saying what the figures are and how many repeats
    header: Sequence[str]
    rows: list[Sequence[Any]]
    notes: list[str] = field(default_factory=list)  # lines under the table: targets met or missed, why
    details: dict[str, Any] = field(default_factory=dict)  # raw measurements, only in the JSON

    def markdown(self) -> str:
        text = f"### {self.title}\n\n{markdown_table(self.header, self.rows)}\n"
        return text + "".join(f"\n{note}" for note in self.notes) + ("\n" if self.notes else "")


def resolved(device: str) -> str:
    """auto -> cuda where a GPU is present, else cpu."""
    import torch

    return "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"


def machine(device: Any) -> dict[str, Any]:
    """Where the numbers were taken: compare only tables taken on the same kind of machine."""
    import torch

    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"device": str(device), "gpu": gpu, "cpu": platform.processor() or platform.machine(),
            "cores": _cores(), "threads": torch.get_num_threads(), "torch": torch.__version__}


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        return f"{value:,.0f}" if isinstance(value, float) and abs(value) >= 100 else \
            f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def as_json(tables: Sequence[Table]) -> dict[str, Any]:
    return {table.name: asdict(table) for table in tables}


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")


def parser(name: str, doc: str, quick_help: str,
           device_help: str = "auto | cpu | cuda (default: auto)") -> argparse.ArgumentParser:
    """The options of every benchmark run alone (`python -m benchmarks.NAME`); a module adds its own."""
    made = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    made.add_argument("--quick", action="store_true", help=quick_help)
    made.add_argument("--device", default="auto", help=device_help)
    made.add_argument("--json", type=Path, default=Path(f"runs/benchmarks/{name}.json"))
    return made


def publish(name: str, args: argparse.Namespace, tables: Sequence[Table], device: str) -> int:
    """A benchmark run alone ends here: its tables as markdown, and as JSON with the machine."""
    for table in tables:
        print(table.markdown())
    write_json(args.json, {"benchmark": name, "quick": args.quick, "machine": machine(resolved(device)),
                           "tables": as_json(tables)})
    print(f"written: {args.json}", file=sys.stderr)
    return 0
