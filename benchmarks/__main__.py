"""Run one benchmark by name: `python -m benchmarks g_step --quick` (or `python -m benchmarks.g_step`)."""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS = {  # name -> what it compares; each is a module benchmarks/<name>.py with main(argv) -> int
    "g_step": "GAN images/s: a fresh batch of fakes for the G step (reference) vs the D step's reused",
    "quality": "the quickstart's champion vs the standard DCGAN recipe in the same time, judged "
               "by a network the sweep never used",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, epilog="\n".join(
        f"{name}: {what}" for name, what in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    args, rest = parser.parse_known_args(argv)
    return importlib.import_module(f"benchmarks.{args.name}").main(rest)


if __name__ == "__main__":
    sys.exit(main())
