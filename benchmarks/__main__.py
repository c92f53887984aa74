"""gansweep's benchmarks: every figure a rate or a ratio measured side by side in the same run.

    python -m benchmarks [--quick] [--device auto|cpu|cuda] [--only NAME,NAME] [--json PATH]
    python -m benchmarks NAME [ARGS]       # one benchmark alone, with its own options (NAME --help)

The suite prints one markdown report (a table per figure, the machine it ran on) and writes the
same figures as JSON. `quality` (a sweep against the standard recipe, ~20 min) runs only by name.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

BENCHMARKS = {  # name -> what it compares; each is a module benchmarks/<name>.py
    "throughput": "trainer images/s against a pytorch/examples-style reference loop; speed options",
    "packing": "aggregate images/s of k trials sharing one device, against k = 1",
    "sweep_efficiency": "time the slots spent training over slots x wall time, cold and warm caches",
    "bookkeeping": "trial-epochs/s the driver records in MLflow, and how long Tune's loop waits",
    "sampler_cost": "time to propose the next trial after 100, 1,000, 5,000 finished ones",
    "latency": "wall time of gansweep's commands against `mlflow runs list`",
    "data_loading": "images/s of a streamed 64 px JPEG folder: decoded every epoch vs the uint8 memmap cache",
    "quality": "the quickstart's champion vs the standard DCGAN recipe in the same time, judged "
               "by a network the sweep never used",
}
SUITE = ("throughput", "packing", "sweep_efficiency", "bookkeeping", "sampler_cost", "latency")


def run_suite(names: list[str], quick: bool, device: str) -> tuple[str, dict]:
    """Each benchmark's tables in turn; the markdown report and the JSON."""
    from benchmarks.report import as_json, machine, resolved

    began = datetime.now(timezone.utc)
    tables, took = [], {}
    for name in names:
        print(f"== {name}: {BENCHMARKS[name]}", file=sys.stderr, flush=True)
        start = time.monotonic()
        tables += importlib.import_module(f"benchmarks.{name}").tables(quick=quick, device=device)
        took[name] = round(time.monotonic() - start, 1)
        print(f"== {name}: {took[name]:.0f} s", file=sys.stderr, flush=True)
    where = machine(resolved(device))
    head = (f"## Benchmarks ({'quick' if quick else 'full'}, {began:%Y-%m-%d})\n\n"
            f"Device {where['gpu'] or where['device']}; CPU {where['cpu']}, {where['cores']} cores; "
            f"torch {where['torch']}. Command: `python -m benchmarks{' --quick' if quick else ''}"
            f"{'' if device == 'auto' else f' --device {device}'}`.\n")
    text = "\n".join([head, *(table.markdown() for table in tables)])
    return text, {"quick": quick, "device": device, "machine": where, "started": began.isoformat(),
                  "seconds": took, "tables": as_json(tables)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in BENCHMARKS:
        return importlib.import_module(f"benchmarks.{argv[0]}").main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, epilog="\n".join(
        f"{name}: {what}" for name, what in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller cases, fewer repeats (minutes)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--only", default=",".join(SUITE), help="comma-separated names (default: the suite)")
    parser.add_argument("--json", type=Path, default=Path("runs/benchmarks/suite.json"))
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if unknown := [n for n in names if n not in BENCHMARKS]:
        parser.error(f"--only: unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
    from benchmarks.report import write_json

    text, figures = run_suite(names, args.quick, args.device)
    print(text)
    write_json(args.json, figures)
    args.json.with_suffix(".md").write_text(text)
    print(f"written: {args.json} and {args.json.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
