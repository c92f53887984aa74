"""`python -m orchestrator sweep` against a real Ray head, real Optuna and a real MLflow store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.cli import main

pytestmark = [pytest.mark.sweep, pytest.mark.slow]


def write_space(tmp_path: Path, tiny: dict, **changes) -> Path:
    space = {
        "name": "tiny", "trainer": "dcgan", "metric": "fid", "mode": "min",
        "num_samples": 6, "max_concurrent": 1, "resources": {"cpu": 1},
        "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 6},
        "scheduler": {"type": "asha", "max_t": 3, "grace_period": 1, "reduction_factor": 2},
        "fixed": {**tiny, "epochs": 3},
        "params": {"lr": {"type": "float", "low": 1e-5, "high": 3e-3, "log": True},
                   "beta1": {"type": "float", "low": 0.0, "high": 0.9}},
        # 4 steps an epoch leave every generator drawing one image (FID flat at 64), which the GAN
        # default rule calls collapsed: these tests are about running trials (tests/test_collapse.py).
        "stop_when": False,
    }
    for key, value in changes.items():
        space[key] = value
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def sweep_args(tmp_path: Path, space: Path, address: str, *extra: str) -> list[str]:
    return ["sweep", str(space), "--address", address, "--storage", str(tmp_path / "sweeps"),
            "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", *extra]


def children(client: MlflowClient, experiment_name: str) -> tuple[object, list]:
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("gansweep.role") == "sweep"]
    assert len(parents) == 1, "one parent run per sweep"
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], kids


def epochs_logged(client: MlflowClient, run) -> list[int]:
    return [m.step for m in sorted(client.get_metric_history(run.info.run_id, "fid"), key=lambda m: m.step)]


def image_steps(client: MlflowClient, run) -> list[int]:
    """The steps of a run's `samples` images, as MLflow 3.17 stores them for its UI:
    images/samples+step+<step>+timestamp+<ms>+<uuid>.png (and a compressed .webp beside it)."""
    files = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    return sorted(int(f.split("+")[2]) for f in files
                  if f.startswith("images/samples+step+") and f.endswith(".png"))


def test_tiny_sweep_one_run_per_trial_asha_stops_some(tmp_path, tiny, ray_address, capsys):
    space = write_space(tmp_path, tiny)
    assert main(sweep_args(tmp_path, space, ray_address)) == 0

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent, kids = children(client, "tiny")
    assert parent.info.status == "FINISHED"
    assert len(kids) == 6
    statuses = [k.data.tags["gansweep.status"] for k in kids]
    assert set(statuses) <= {"finished", "stopped_early"}
    assert "stopped_early" in statuses, "ASHA stops the trials below the median after epoch 1"
    for kid in kids:
        epochs = epochs_logged(client, kid)
        assert epochs == list(range(1, len(epochs) + 1)), "one point per epoch, none missing"
        assert {"lr", "beta1", "dataset"} <= set(kid.data.params)
        assert {"g_loss", "d_loss", "kid", "inception_score", "d_acc"} <= set(kid.data.metrics)
        samples = [a.path for a in client.list_artifacts(kid.info.run_id, "samples")]
        assert f"samples/epoch_{len(epochs):03d}.png" in samples
        assert image_steps(client, kid) == epochs, "the grids as MLflow images: one per epoch"
        assert kid.data.tags["mlflow.loggedImages"] == "True", "what the UI's image grid looks for"
        models = client.search_logged_models([kid.info.experiment_id],
                                             filter_string=f"source_run_id = '{kid.info.run_id}'")
        assert {m.name for m in models} == {"generator", "discriminator"}
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "leaderboard.csv" in parent_files
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/best_trials.png" in plots and "plots/param_importances.png" in plots

    out = capsys.readouterr().out
    assert "Best trial: t0" in out and "mlflow ui" in out
    assert f"runs?workflowType=machine_learning&viewStateShareKey=gansweep-{parent.info.run_id}\n" in out
    view = client.get_experiment(parent.info.experiment_id).tags[
        f"mlflow.sharedViewState.gansweep-{parent.info.run_id}"]
    assert "metrics.`fid`" in json.loads(json.loads(view)["state"])["selectedColumns"]
    assert f"orchestrator promote tiny --tracking-uri sqlite:///{tmp_path}/mlflow.db" in out, "the same store"


def test_diverging_trial_fails_alone(tmp_path, tiny, ray_address):
    space = write_space(
        tmp_path, tiny, num_samples=2, sampler={"type": "grid", "seed": 0},
        scheduler={"type": "fifo"},
        fixed={**tiny, "epochs": 2, "loss": "lsgan", "optimizer": "sgd"},
        params={"lr": {"type": "categorical", "choices": [1.0e-3, 1.0e30]}})
    assert main(sweep_args(tmp_path, space, ray_address)) == 0

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    _, kids = children(client, "tiny")
    by_lr = {float(k.data.params["lr"]): k for k in kids}
    assert by_lr[1e30].info.status == "FAILED"
    assert by_lr[1e30].data.tags["gansweep.status"] == "diverged"
    assert "became nan" in by_lr[1e30].data.tags["gansweep.stop_reason"]
    assert by_lr[1e-3].info.status == "FINISHED"


def run_in_background(tmp_path: Path, args: list[str]) -> subprocess.Popen:
    log = open(tmp_path / "driver.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "orchestrator", *args], stdout=log, stderr=log,
                            cwd=tmp_path, start_new_session=True)


def wait_for(condition, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def resumed_to_the_end(tmp_path: Path, args: list[str], timeout: float = 300
                       ) -> tuple[MlflowClient, object, list]:
    """`sweep ... --resume` run to its end; the store, and the sweep's parent and trial runs."""
    resumed = run_in_background(tmp_path, [*args, "--resume"])
    assert resumed.wait(timeout=timeout) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    return (client, *children(client, "tiny"))


def checkpoints(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "sweeps").glob("*/t*/checkpoint_*"))


def test_killed_trial_is_retried_from_its_checkpoint(tmp_path, tiny, ray_cluster):
    # Enough epochs (a fraction of a second each) that the kill lands while the trial runs.
    space = write_space(tmp_path, tiny, num_samples=1, scheduler={"type": "fifo"},
                        fixed={**tiny, "epochs": 30})
    driver = run_in_background(tmp_path, sweep_args(tmp_path, space, ray_cluster.address))
    wait_for(lambda: len(checkpoints(tmp_path)) >= 1, "the first checkpoint")
    trial_processes = ray_cluster.trial_processes()
    assert len(trial_processes) == 1
    trial_processes[0].kill()  # SIGKILL, as the OOM killer would
    assert driver.wait(timeout=300) == 0, (tmp_path / "driver.log").read_text()[-3000:]

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    _, kids = children(client, "tiny")
    assert len(kids) == 1, "the retry continues the same MLflow run"
    assert epochs_logged(client, kids[0]) == list(range(1, 31))
    assert kids[0].data.tags["gansweep.retries"] == "1"
    assert kids[0].data.tags["gansweep.status"] == "finished"


def test_killed_driver_resumes_with_every_trial_once(tmp_path, tiny, ray_address):
    # Epochs of a few tenths of a second, so that the kill lands while trials run (the kill between
    # a checkpoint rotation and a snapshot has its own test below).
    space = write_space(tmp_path, tiny, num_samples=3, scheduler={"type": "fifo"},
                        fixed={**tiny, "epochs": 5, "batch_size": 4, "max_train": None})
    args = sweep_args(tmp_path, space, ray_address)
    driver = run_in_background(tmp_path, args)
    trial_dirs = lambda: {p.parent for p in checkpoints(tmp_path)}  # noqa: E731
    wait_for(lambda: len(trial_dirs()) >= 2, "a second trial's checkpoint")
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()

    client, parent, kids = resumed_to_the_end(tmp_path, args)
    assert parent.info.status == "FINISHED"
    # A trial started in the last seconds before the kill may be unknown to Tune's saved state:
    # its run is closed as lost (never left RUNNING), and Tune runs a new trial in its place.
    lost = [k for k in kids if k.data.tags.get("gansweep.status") == "lost"]
    assert all(k.info.status == "KILLED" for k in lost)
    trials = [k for k in kids if k not in lost]
    assert len(trials) == 3, "every trial of the sweep accounted for exactly once"
    for kid in trials:
        assert epochs_logged(client, kid) == [1, 2, 3, 4, 5]
        assert kid.info.status == "FINISHED"


def test_pbt_exploits_and_records_the_new_hyperparameters(tmp_path, tiny, ray_address):
    space = write_space(tmp_path, tiny, num_samples=4, max_concurrent=4, resources={"cpu": 0.5},
                        fixed={**tiny, "epochs": 2},
                        scheduler={"type": "pbt", "perturbation_interval": 1, "max_t": 2})
    without_sampler = yaml.safe_load(space.read_text())
    del without_sampler["sampler"]  # PBT samples its own population
    space.write_text(yaml.safe_dump(without_sampler))
    assert main(sweep_args(tmp_path, space, ray_address)) == 0

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    _, kids = children(client, "tiny")
    assert len(kids) == 4
    for kid in kids:
        assert epochs_logged(client, kid) == [1, 2], "a cloned checkpoint continues the epochs"
    mutated = [k for k in kids if any(t.startswith("gansweep.config_from_epoch_") for t in k.data.tags)]
    assert mutated, "with 4 trials, the bottom quarter exploits the top one at each perturbation"


def test_time_budget_ends_the_sweep_and_closes_every_run(tmp_path, tiny, ray_address):
    space = write_space(tmp_path, tiny, num_samples=50, scheduler={"type": "fifo"},
                        fixed={**tiny, "epochs": 50})
    assert main(sweep_args(tmp_path, space, ray_address, "--time-budget", "25s")) == 0

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent, kids = children(client, "tiny")
    assert parent.info.status == "FINISHED"
    assert 1 <= len(kids) < 50
    assert all(k.info.status != "RUNNING" for k in kids), "no run is left open"
    # A trial still running when the budget ends (the budget may also end between two trials)
    # is closed as stopped early, with the reason.
    cut = [k for k in kids if k.data.tags.get("gansweep.stop_reason") == "the sweep's time budget ran out"]
    assert all(k.data.tags["gansweep.status"] == "stopped_early" for k in cut)


def test_ctrl_c_leaves_an_interrupted_sweep_that_resume_completes(tmp_path, tiny, ray_address):
    space = write_space(tmp_path, tiny, num_samples=2, scheduler={"type": "fifo"},
                        fixed={**tiny, "epochs": 5, "batch_size": 4, "max_train": None})
    args = sweep_args(tmp_path, space, ray_address)
    driver = run_in_background(tmp_path, args)
    wait_for(lambda: len(checkpoints(tmp_path)) >= 1, "the first checkpoint")
    os.killpg(driver.pid, signal.SIGINT)  # what a terminal sends to its foreground job on Ctrl-C
    assert driver.wait(timeout=120) == 130
    said = (tmp_path / "driver.log").read_text()
    assert "interrupted" in said and f"sweep {space} --resume --tracking-uri sqlite:///{tmp_path}" in said
    assert "Best trial" not in said

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent, kids = children(client, "tiny")
    assert parent.info.status == "KILLED"
    assert "leaderboard.csv" not in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert all(k.info.status != "RUNNING" for k in kids)
    assert any(k.data.tags["gansweep.status"] == "interrupted" for k in kids)

    client, parent, kids = resumed_to_the_end(tmp_path, args)
    assert parent.info.status == "FINISHED"
    assert len(kids) == 2
    for kid in kids:
        assert kid.info.status == "FINISHED" and kid.data.tags["gansweep.status"] == "finished"
        assert epochs_logged(client, kid) == [1, 2, 3, 4, 5]


def test_a_kill_between_rotation_and_snapshot_still_resumes(tmp_path, tiny, ray_address, monkeypatch):
    """The kill lands where Tune's own rotation (num_to_keep=2) would already have deleted the
    checkpoint that the experiment snapshot in storage names for the trial: the driver is stopped
    (SIGSTOP) while the storage shows that state, then killed."""
    import pyarrow.fs

    from orchestrator.library_internals import snapshot_checkpoints
    from orchestrator.sweep.checkpoint_rotation import checkpoint_indices

    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "5")  # a dozen checkpoints between two snapshots
    space = write_space(tmp_path, tiny, num_samples=1, scheduler={"type": "fifo"},
                        fixed={**tiny, "epochs": 40, "batch_size": 4, "max_train": None})
    args = sweep_args(tmp_path, space, ray_address)
    driver = run_in_background(tmp_path, args)
    fs = pyarrow.fs.LocalFileSystem()

    def in_the_window() -> bool:
        for experiment in (tmp_path / "sweeps").glob("tiny-*"):
            for trial_id, named in snapshot_checkpoints(fs, str(experiment)).items():
                (trial_dir,) = experiment.glob(f"t*_{trial_id}")
                if max(checkpoint_indices(fs, str(trial_dir)), default=-1) >= named + 2:
                    return True
        return False

    def stopped_in_the_window() -> bool:
        if not in_the_window():
            return False
        os.kill(driver.pid, signal.SIGSTOP)  # now the driver writes no snapshot and deletes nothing
        if in_the_window():
            return True
        os.kill(driver.pid, signal.SIGCONT)
        return False

    wait_for(stopped_in_the_window, "two checkpoints newer than the one the stored snapshot names")
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()

    client, parent, kids = resumed_to_the_end(tmp_path, args)
    assert parent.info.status == "FINISHED"
    (kid,) = kids
    assert kid.info.status == "FINISHED" and kid.data.tags["gansweep.status"] == "finished"
    assert epochs_logged(client, kid) == list(range(1, 41))
    assert int(kid.data.metrics["epoch"]) == 40


def test_a_local_sweep_runs_its_own_ray_with_token_auth_and_no_warning(tmp_path, tiny):
    """The quickstart's path: no --address, no RAY_AUTH_MODE; Ray 2.60 turns token auth on."""
    space = write_space(tmp_path, tiny, num_samples=1, scheduler={"type": "fifo"},
                        fixed={**tiny, "epochs": 1})
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env["HOME"] = str(tmp_path / "home")  # where Ray keeps the token it makes
    done = subprocess.run([sys.executable, "-m", "orchestrator", "sweep", str(space),
                           "--storage", str(tmp_path / "sweeps"), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Token authentication" not in done.stdout + done.stderr
    assert (tmp_path / "home" / ".ray" / "auth_token").is_file()
    _, kids = children(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"), "tiny")
    assert [k.info.status for k in kids] == ["FINISHED"]
