"""The light commands import nothing heavy: `--help` answers without torch, Ray, Optuna or MLflow,
and `report` reads MLflow without torch or Ray (each check runs the CLI in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "torchvision", "torchmetrics", "ray", "optuna", "mlflow")

RUN_CLI = """
import json, sys
from orchestrator.cli import main
try:
    main(json.loads(sys.argv[1]))
except SystemExit:
    pass
print(json.dumps(sorted(name for name in {heavy} if name in sys.modules)))
"""


def imported(argv: list[str]) -> list[str]:
    """The heavy packages in sys.modules after `python -m orchestrator <argv>` has run."""
    done = subprocess.run([sys.executable, "-c", RUN_CLI.format(heavy=HEAVY), json.dumps(argv)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in (
    "sweep", "report", "promote", "generate", "ui", "check-cluster"))], ids=" ".join)
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    assert imported(argv) == []


def test_report_reads_mlflow_without_torch_or_ray(tmp_path: Path) -> None:
    """All of report's imports happen before it finds no store here (and says so)."""
    loaded = imported(["report", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"])
    assert "mlflow" in loaded  # the command did run
    assert not {"torch", "torchvision", "torchmetrics", "ray"} & set(loaded)


def test_the_trainer_catalog_names_trainers_without_importing_them() -> None:
    code = ("import sys; from trainers import catalog; "
            "assert 'dcgan' in catalog.TRAINERS and 'vae' not in catalog.TRAINERS; "
            "names = sorted(catalog.TRAINERS); assert 'torch' not in sys.modules, 'named'; "
            "catalog.get('dcgan').resolve({}); assert 'torch' in sys.modules, 'built'; print(names)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['augment', 'classifier', 'dcgan', 'mlp_gan', 'transfer']"
