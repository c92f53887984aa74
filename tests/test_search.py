"""Where a search starts: `start_from` (a space's known-good configs, tried first) and `--warm-start`
(the finished trials of the experiment's earlier sweeps, handed to Optuna). Real Optuna, real MLflow
(sqlite in tmp_path) and, for the sweeps, the session's real Ray cluster."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import optuna
import pytest
import ray
import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from test_sweep import sweep_args, write_space

from orchestrator.cli import main
from orchestrator.space.loading import load_space
from orchestrator.sweep import warm_start

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "name": "starts", "trainer": "dcgan", "metric": "fid", "mode": "min", "num_samples": 4,
    "sampler": {"type": "tpe", "seed": 0}, "fixed": {"epochs": 2},
    "params": {"lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
               "beta1": {"type": "float", "low": 0.0, "high": 0.9},
               "loss": {"type": "categorical", "choices": ["bce", "wgan-gp"]},
               "n_critic": {"type": "int", "low": 1, "high": 5, "when": {"loss": "wgan-gp"}},
               "ngf": {"type": "int", "low": 16, "high": 32, "step": 8}},
}


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Ray must not start for bad input")

    monkeypatch.setattr(ray, "init", refuse)


def space_file(tmp_path: Path, **changes) -> Path:
    """SPACE with top-level fields changed (None: left out)."""
    space = {k: v for k, v in {**copy.deepcopy(SPACE), **changes}.items() if v is not None}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def sweep(tmp_path: Path, path: Path, *extra: str) -> int:
    return main(["sweep", str(path), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
                 "--storage", str(tmp_path / "sweeps"), *extra])


# -- start_from: checked like the rest of the space ---------------------------------------------------

@pytest.mark.parametrize("start_from, field, words", [
    ([{"lrr": 1e-4}], "start_from.0.lrr", "not a param of this space. Did you mean lr?"),
    ([{"epochs": 3}], "start_from.0.epochs", "'epochs' is fixed (2) in this space"),
    ([{"lr": 5e-2}], "start_from.0.lr", "0.05 is outside [1e-05, 0.001]"),
    ([{"lr": 1e-4}, {"beta1": 2}], "start_from.1.beta1", "2 is outside [0, 0.9]"),
    ([{"loss": "hinge"}], "start_from.0.loss", "'hinge' is not one of the choices ['bce', 'wgan-gp']"),
    ([{"ngf": 20}], "start_from.0.ngf", "20 is not low + k*step (16 + k*8)"),
    ([{"ngf": 16.5}], "start_from.0.ngf", "16.5 is not a whole number"),
    ([{"n_critic": 3}], "start_from.0.n_critic", "searched only when loss is 'wgan-gp', and this entry "
                                                 "leaves loss to the sampler"),
    ([{"loss": "bce", "n_critic": 3}], "start_from.0.n_critic", "this entry sets loss='bce'"),
    ([{}], "start_from.0", "names no param"),
    ([{"lr": 1e-4}] * 5, "start_from", "5 configs, but the sweep runs 4 trials"),
])
def test_a_start_from_entry_outside_the_space_exits_2_naming_it(tmp_path, capsys, no_ray, start_from,
                                                                field, words):
    assert sweep(tmp_path, space_file(tmp_path, start_from=start_from)) == 2
    err = capsys.readouterr().err
    assert f"space.yaml: {field}: " in err and words in err, err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "sweeps").exists()


def test_a_grid_entry_names_a_whole_grid_point(tmp_path, capsys, no_ray):
    params = {"lr": {"type": "categorical", "choices": [1e-4, 1e-3]},
              "beta1": {"type": "categorical", "choices": [0.5, 0.9]}}
    path = space_file(tmp_path, sampler={"type": "grid"}, params=params, start_from=[{"lr": 1e-3}])
    assert sweep(tmp_path, path) == 2
    assert "start_from.0: a grid runs whole points of its grid, so an entry names every param (missing: " \
           "beta1)" in capsys.readouterr().err


def test_the_trainer_judges_each_entry(tmp_path, capsys, no_ray):
    params = {"freeze_epochs": {"type": "int", "low": 0, "high": 10},
              "epochs": {"type": "int", "low": 5, "high": 20}}
    path = space_file(tmp_path, name="t", trainer="transfer", metric="val_acc", mode="max", params=params,
                      fixed={"source": "runs:/abc/discriminator"},
                      start_from=[{"freeze_epochs": 10, "epochs": 5}])
    assert sweep(tmp_path, path) == 2
    err = capsys.readouterr().err
    assert "start_from.0.freeze_epochs: trainer 'transfer' rejects it: freeze_epochs=10 is larger than " \
           "epochs=5" in err, err


def test_set_pins_a_param_over_start_from_and_names_itself(tmp_path, capsys, no_ray):
    path = space_file(tmp_path, start_from=[{"loss": "wgan-gp", "n_critic": 2, "lr": 2e-4}, {"lr": 5e-4}])
    assert sweep(tmp_path, path, "--dry-run", "--set", "lr=1e-3") == 0
    out = capsys.readouterr().out
    assert "start_from loss=wgan-gp, n_critic=2\n" in out, "the pinned lr wins; an entry left empty goes"
    assert sweep(tmp_path, path, "--set", "start_from=[{lrr: 1}]") == 2
    assert "--set start_from: 'lrr' is not a param of this space" in capsys.readouterr().err
    assert sweep(tmp_path, path, "--num-samples", "1") == 2
    assert "start_from: 2 configs, but --num-samples runs 1 trials" in capsys.readouterr().err


def test_grid_runs_its_start_from_points_first_and_each_point_once():
    from orchestrator.sweep.tuner import searcher

    space = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / "transfer_freeze_mnist.yaml")
    search = searcher(space)
    configs = []
    for i in range(space.grid_size):
        config = search.suggest(f"t{i}")
        configs.append({name: config[name] for name in space.params})
        search.on_trial_complete(f"t{i}", {"val_acc": 0.5})
    assert configs[:len(space.start_from)] == space.start_from
    assert len({tuple(c.values()) for c in configs}) == space.grid_size == 12


def test_a_restored_searcher_does_not_run_start_from_again(tmp_path):
    """--resume: Tune restores the searcher it saved (Searcher.save_to_dir / restore_from_dir), whose
    study has taken the enqueued configs already."""
    from orchestrator.sweep.tuner import searcher

    entries = [{"lr": 2e-4, "beta1": 0.5}, {"loss": "bce", "ngf": 24}]
    space = load_space(space_file(tmp_path, start_from=entries))
    first = searcher(space)
    config = first.suggest("t1")
    assert {k: config[k] for k in entries[0]} == entries[0]
    first.save_to_dir(str(tmp_path), "session")
    restored = searcher(space)  # a new one, as Tuner.restore unpickles it, then its saved state
    restored.restore_from_dir(str(tmp_path))
    config = restored.suggest("t2")
    assert {k: config[k] for k in entries[1]} == entries[1], "the second, not the first again"
    assert not restored.searcher._ot_study.get_trials(states=[optuna.trial.TrialState.WAITING]), \
        "nothing left enqueued: the next trials are sampled"


# -- --warm-start: where it cannot learn, and what it reads back ------------------------------------

@pytest.mark.parametrize("changes, extra, words", [
    ({"sampler": {"type": "grid"}, "params": {"lr": {"type": "categorical", "choices": [1e-4, 1e-3]}}}, (),
     "uses sampler grid, which runs the points of its grid whatever came before"),
    ({"sampler": {"type": "random"}}, (), "uses sampler random, which draws every trial on its own"),
    ({"sampler": {"type": "nsga2"}, "metric": ["fid", "inception_score"], "mode": ["min", "max"],
      "scheduler": {"type": "fifo"}}, (), "breeds each generation from the previous one of its own study"),
    ({"params": {"lr": SPACE["params"]["lr"]}, "scheduler": {"type": "pbt"}, "sampler": None}, (),
     "uses scheduler pbt, which samples its own population"),
    ({}, ("--resume",), "--warm-start with --resume: a resumed sweep continues with the history its "
                        "searcher saved"),
])
def test_warm_start_is_refused_where_it_cannot_learn(tmp_path, capsys, no_ray, changes, extra, words):
    assert sweep(tmp_path, space_file(tmp_path, **changes), "--warm-start", *extra) == 2
    err = capsys.readouterr().err
    assert words in err and "Leave" in err, err
    assert not (tmp_path / "mlflow.db").exists()


def test_warm_start_keeps_the_finished_trials_that_fit_todays_space(tmp_path):
    """Params are strings in MLflow; a param the space would not suggest (its `when` does not hold)
    need not fit; a run that failed or has no metric is no trial to learn from."""
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("starts")

    def trial(parent: str, params: dict, fid: float | None = 50.0, status: str = "FINISHED") -> None:
        run = client.create_run(experiment, tags={"mlflow.parentRunId": parent})
        for key, value in params.items():
            client.log_param(run.info.run_id, key, str(value))
        if fid is not None:
            client.log_metric(run.info.run_id, "fid", fid)
        client.set_terminated(run.info.run_id, status)

    base = {"lr": 2e-4, "beta1": 0.5, "ngf": 24, "epochs": 2}
    old = client.create_run(experiment, tags={"gansweep.role": "sweep"}).info.run_id
    trial(old, {**base, "loss": "bce", "n_critic": 9}, fid=40.0)  # n_critic is not suggested for bce
    trial(old, {**base, "loss": "wgan-gp", "n_critic": 3}, fid=30.0)
    trial(old, {**base, "loss": "wgan-gp"})  # n_critic missing: skipped
    trial(old, {**base, "loss": "hinge"})  # not a choice any more: skipped
    trial(old, {**base, "loss": "bce", "ngf": 20})  # not on the steps: skipped
    trial(old, {**base, "loss": "bce"}, status="FAILED")  # not finished: not counted
    trial(old, {**base, "loss": "bce"}, fid=None)  # no metric: not counted
    empty = client.create_run(experiment, tags={"gansweep.role": "sweep"}).info.run_id
    trial(empty, {**base, "loss": "hinge"})

    history = warm_start.load(client, experiment, load_space(space_file(tmp_path)))
    assert sorted((t.value, t.params) for t in history.trials) == [
        (30.0, {"lr": 2e-4, "beta1": 0.5, "loss": "wgan-gp", "n_critic": 3, "ngf": 24}),
        (40.0, {"lr": 2e-4, "beta1": 0.5, "loss": "bce", "ngf": 24})]
    assert history.sweeps == [old] and history.skipped == 4 and history.earlier == 2
    assert history.line() == ("warm start: 2 trials from 1 earlier sweeps (4 skipped: their params fall "
                              "outside this space)")


# -- real sweeps ------------------------------------------------------------------------------------

def sweeps_of(client: MlflowClient, name: str = "tiny") -> list[tuple[Run, list[Run]]]:
    """Each sweep of the experiment, oldest first: its parent run, and its trial runs in the order
    Tune made them (t001, t002, ...)."""
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if r.data.tags.get("gansweep.role") == "sweep"]
    return [(parent, sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
                            key=lambda run: run.info.run_name)) for parent in parents]


@pytest.mark.sweep
@pytest.mark.slow
def test_start_from_configs_run_first_with_exactly_their_values(tmp_path, tiny, ray_address, capsys):
    params = {**SPACE["params"]}
    del params["ngf"]  # tiny fixes ngf
    entries = [{"loss": "wgan-gp", "n_critic": 2, "lr": 2.5e-4}, {"beta1": 0.25}]
    space = write_space(tmp_path, tiny, num_samples=2, max_concurrent=2, scheduler={"type": "fifo"},
                        params=params, fixed={**tiny, "epochs": 1}, start_from=entries)
    assert main(sweep_args(tmp_path, space, ray_address)) == 0
    assert "start_from loss=wgan-gp, lr=0.00025, n_critic=2; beta1=0.25" in capsys.readouterr().out

    ((_, (first, second)),) = sweeps_of(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"))
    assert {k: first.data.params[k] for k in entries[0]} == {"loss": "wgan-gp", "n_critic": "2",
                                                              "lr": "0.00025"}
    assert second.data.params["beta1"] == "0.25"
    assert "beta1" in first.data.params and "lr" in second.data.params, "what an entry leaves out is sampled"


@pytest.mark.sweep
@pytest.mark.slow
def test_start_from_seeds_pbts_initial_population(tmp_path, tiny, ray_address):
    space = write_space(tmp_path, tiny, num_samples=2, max_concurrent=2, resources={"cpu": 0.5},
                        fixed={**tiny, "epochs": 1}, start_from=[{"lr": 3e-4, "beta1": 0.3}],
                        scheduler={"type": "pbt", "perturbation_interval": 2})  # none: one actor each
    without_sampler = yaml.safe_load(space.read_text())
    del without_sampler["sampler"]  # PBT samples its own population
    space.write_text(yaml.safe_dump(without_sampler))
    assert main(sweep_args(tmp_path, space, ray_address)) == 0

    ((_, (first, second)),) = sweeps_of(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"))
    assert (first.data.params["lr"], first.data.params["beta1"]) == ("0.0003", "0.3")
    assert second.data.params["lr"] != "0.0003"


def searcher_study(tmp_path: Path, parent: Run) -> optuna.Study:
    """The Optuna study of a finished sweep's searcher, as Tune saved it beside the trials."""
    (state,) = (tmp_path / "sweeps" / parent.data.tags["gansweep.tune_name"]).glob("searcher-state-*.pkl")
    return pickle.loads(state.read_bytes())["_ot_study"]


@pytest.mark.sweep
@pytest.mark.slow
def test_warm_start_learns_from_the_earlier_sweep_and_skips_what_no_longer_fits(tmp_path, tiny, ray_address,
                                                                               capsys):
    """A second sweep, in a narrower space: its study holds the first sweep's trials that still fit
    (the other skipped, and counted), and its first proposal is TPE's answer to them, which is not
    what the same TPE proposes knowing nothing."""
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    settings = dict(scheduler={"type": "fifo"}, fixed={**tiny, "epochs": 1},
                    sampler={"type": "tpe", "seed": 0, "n_startup_trials": 2})
    space = write_space(tmp_path, tiny, num_samples=3, max_concurrent=2, **settings)
    assert main(sweep_args(tmp_path, space, ray_address, "--warm-start")) == 0
    assert "warm start: no earlier sweep of this experiment to learn from" in capsys.readouterr().err
    ((first_parent, first_trials),) = sweeps_of(client)

    beta1 = sorted(float(run.data.params["beta1"]) for run in first_trials)
    high = (beta1[1] + beta1[2]) / 2  # two of the three still fit
    narrower = write_space(tmp_path, tiny, num_samples=1, **settings, params={
        "lr": {"type": "float", "low": 1e-5, "high": 3e-3, "log": True},
        "beta1": {"type": "float", "low": 0.0, "high": high}})
    assert main(sweep_args(tmp_path, narrower, ray_address, "--warm-start")) == 0
    assert ("warm start: 2 trials from 1 earlier sweeps (1 skipped: their params fall outside this space)"
            in capsys.readouterr().err)
    _, (parent, (trial,)) = sweeps_of(client)
    assert parent.data.tags["gansweep.warm_start"] == first_parent.info.run_id
    assert (parent.data.tags["gansweep.warm_start.trials"], parent.data.tags["gansweep.warm_start.skipped"]) \
        == ("2", "1")

    study = searcher_study(tmp_path, parent)
    learned, runs = study.trials[:2], {run.info.run_id: run for run in first_trials}
    assert len(study.trials) == 3, "two learned, one run"
    for learned_trial in learned:
        run = runs[learned_trial.user_attrs["mlflow_run_id"]]
        assert learned_trial.params == {k: float(run.data.params[k]) for k in ("lr", "beta1")}
        assert learned_trial.params["beta1"] <= high
        assert learned_trial.value == run.data.metrics["fid"]

    def first_proposal(trials: list) -> dict:
        replay = optuna.create_study(sampler=load_space(narrower).optuna_sampler())
        replay.add_trials(trials)
        proposal = replay.ask()
        load_space(narrower).define_by_run(proposal)
        return proposal.params

    proposed = {k: float(trial.data.params[k]) for k in ("lr", "beta1")}
    assert proposed == first_proposal(learned), "TPE's answer to the first sweep's trials"
    assert proposed != first_proposal([]), "a cold start proposes something else"


def test_warm_start_learns_only_from_trials_scored_by_todays_evaluator(tmp_path):
    """FID under another evaluator network is another ruler: those trials are skipped and counted,
    and a sweep skipped whole for it is named."""
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("rulers")
    params = {"lr": 2e-4, "beta1": 0.5, "ngf": 24, "epochs": 2, "loss": "bce"}

    def sweep_with(name: str, evaluators: list[str | None]) -> str:
        parent = client.create_run(experiment, run_name=name, tags={"gansweep.role": "sweep"}).info.run_id
        for fid, scored_by in enumerate(evaluators, 10):
            run = client.create_run(experiment, tags={"mlflow.parentRunId": parent, **(
                {"gansweep.evaluator": scored_by} if scored_by else {})})
            for key, value in params.items():
                client.log_param(run.info.run_id, key, str(value))
            client.log_metric(run.info.run_id, "fid", float(fid))
            client.set_terminated(run.info.run_id, "FINISHED")
        return parent

    same = sweep_with("sweep same", ["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    sweep_with("sweep other", ["bbbbbbbbbbbb", None])
    history = warm_start.load(client, experiment, load_space(space_file(tmp_path)), {"aaaaaaaaaaaa"})
    assert [t.value for t in history.trials] == [10.0] and history.sweeps == [same]
    assert history.other_evaluator == 3 and history.other_sweeps == ["sweep other"]
    assert "3 skipped: scored by another evaluator network" in history.line()
    assert "whole sweeps: sweep other" in history.line()
    assert history.tags()["gansweep.warm_start.other_evaluator"] == "3"
    everything = warm_start.load(client, experiment, load_space(space_file(tmp_path)))
    assert len(everything.trials) == 4, "without today's evaluators (a classifier sweep) nothing is filtered"
