"""The errors a command reports as one line, without a traceback, and the exit code of each.

`cli.main` maps them by type; every other module raises them and imports nothing from the CLI.
"""

from __future__ import annotations

from pathlib import Path


class GansweepError(Exception):
    """An error the user can act on: printed as `error: <message>`, exit code `exit_code`."""

    exit_code = 1


class UsageError(GansweepError):
    """Bad input found before anything started (a flag, an address, a cluster or storage that
    cannot run the sweep)."""

    exit_code = 2


class SpaceError(UsageError):
    """A space that cannot run. Message: `<file>: <field>: <what is wrong>. <how to fix>`."""

    def __init__(self, path: str | Path, field: str, message: str):
        self.path, self.field, self.detail = str(path), field, message
        super().__init__(f"{path}: {field}: {message}" + ("" if message.endswith((".", "?")) else "."))


class LookupProblem(GansweepError):
    """Something the user named is not in MLflow (an experiment, a run, a model)."""
