"""Search-space loading and validation, with real Optuna studies (no Ray run; Tune domains only)."""

from __future__ import annotations

import ast
import copy
import dataclasses
import hashlib
import importlib.util
import itertools
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from orchestrator.errors import SpaceError
from orchestrator.space.loading import load_space
from trainers.catalog import TRAINERS, get

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))
optuna.logging.set_verbosity(optuna.logging.WARNING)

BASE = {
    "name": "t",
    "trainer": "dcgan",
    "metric": "fid",
    "mode": "min",
    "fixed": {"dataset": "mnist5k", "epochs": 3},
    "params": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        "loss": {"type": "categorical", "choices": ["bce", "wgan-gp"]},
        "n_critic": {"type": "int", "low": 1, "high": 5, "when": {"loss": "wgan-gp"}},
    },
}


def write(tmp_path: Path, data: dict | str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def edited(**changes: object) -> dict:
    """BASE with dotted keys set (`params__lr__low=...` -> params.lr.low); None deletes."""
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return data


def run_study(space, n: int, objective=lambda params: params.get("lr", 0.0)) -> optuna.Study:
    study = optuna.create_study(sampler=space.optuna_sampler(), directions=[
        "minimize" if mode == "min" else "maximize" for mode in space.modes])
    for _ in range(n):
        trial = study.ask()
        fixed = space.define_by_run(trial)
        assert fixed == space.fixed
        value = objective(trial.params)
        study.tell(trial, [value] * len(space.metrics) if len(space.metrics) > 1 else value)
    return study


@pytest.mark.parametrize("path", SPACES, ids=[p.name for p in SPACES])
def test_every_shipped_space_loads(path: Path) -> None:
    space = load_space(path)
    assert space.trainer in space.describe()
    assert space.primary_metric == ("fid" if space.trainer in ("mlp_gan", "dcgan") else "val_acc")
    assert set(space.metrics) <= set(get(space.trainer).metrics)
    assert space.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    run_study(space, 3)


def test_shipped_spaces_include_the_seed_families() -> None:
    names = {p.stem for p in SPACES}
    assert {"quickstart", "mlp_gan_mnist_grid", "mlp_gan_mnist_tpe", "dcgan_mnist", "dcgan_cifar10",
            "lsgan_vs_dcgan_celeba", "dcgan_mnist_seed003", "transfer_freeze_mnist",
            "augment_cifar10"} <= names
    quick = load_space(ROOT / "search_spaces" / "quickstart.yaml")
    assert quick.trainer == "dcgan" and quick.fixed["dataset"] == "mnist5k"
    assert quick.resources.gpu == 0 and quick.scheduler.type == "asha"
    assert quick.scheduler.max_t == quick.fixed["epochs"]


def test_loading_never_imports_ray() -> None:
    for module in sorted((ROOT / "orchestrator" / "space").glob("*.py")):
        tree = ast.parse(module.read_text())
        for node in tree.body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "ray" or n.startswith("ray.") for n in names)
    if "ray" not in sys.modules:  # unless an earlier test imported it, check what loading pulls in
        for path in SPACES:
            load_space(path).describe()
        assert "ray" not in sys.modules


def test_define_by_run_through_ray_tunes_optuna_search() -> None:
    import ray
    from ray.tune.search.optuna import OptunaSearch

    space = load_space(ROOT / "search_spaces" / "dcgan_mnist.yaml")
    searcher = OptunaSearch(space=space.define_by_run, metric=space.primary_metric,
                            mode=space.primary_mode, sampler=space.optuna_sampler())
    for i in range(6):
        config = searcher.suggest(f"t{i}")
        assert {k: config[k] for k in space.fixed} == space.fixed  # the constants are in the config
        assert ("n_critic" in config) == (config["loss"] == "wgan-gp")
        assert set(config) - set(space.fixed) <= set(space.params)
        searcher.on_trial_complete(f"t{i}", {"fid": 100.0 - i})
    assert not ray.is_initialized()


def test_grid_end_is_quiet_under_ask_and_tell() -> None:
    """Optuna's GridSampler calls study.stop() after the last point, which raises outside
    study.optimize (optuna #4121); Ray's OptunaSearch uses ask/tell."""
    space = load_space(ROOT / "search_spaces" / "dcgan_mnist_seed003.yaml")
    study = run_study(space, space.grid_size)  # tells every trial, the last one included
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_cmaes_sampler(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, edited(sampler={"type": "cmaes", "seed": 1})))
    assert isinstance(space.optuna_sampler(), optuna.samplers.CmaEsSampler)
    study = run_study(space, 8)
    # After the first (random) trial, CMA-ES itself proposes lr: its generation is recorded per trial.
    assert all("cma:generation" in t.system_attrs for t in study.trials[1:])
    assert all(1e-4 <= t.params["lr"] <= 1e-3 for t in study.trials)


def test_cmaes_without_its_package_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "cmaes" else find_spec(name, *args))
    with pytest.raises(SpaceError, match="sampler.type: cmaes needs the 'cmaes' package. pip install cmaes"):
        load_space(write(tmp_path, edited(sampler={"type": "cmaes"})))


def test_conditional_params_appear_only_when_their_condition_holds(tmp_path: Path) -> None:
    data = edited(params__gp_weight={"type": "float", "low": 1.0, "high": 20.0,
                                     "when": {"n_critic": [3, 4, 5]}})
    data["params"] = {"gp_weight": data["params"].pop("gp_weight"), **data["params"]}  # listed first
    space = load_space(write(tmp_path, data))
    assert list(space.params)[-1] == "gp_weight"  # evaluated after what it depends on
    study = run_study(space, 30, objective=lambda p: p["lr"] + p.get("n_critic", 0))
    losses = [t.params["loss"] for t in study.trials]
    assert {"bce", "wgan-gp"} <= set(losses)
    for trial in study.trials:
        assert ("n_critic" in trial.params) == (trial.params["loss"] == "wgan-gp")
        assert ("gp_weight" in trial.params) == (trial.params.get("n_critic", 0) >= 3)
    assert any("gp_weight" in t.params for t in study.trials)


def test_shipped_conditional_space_with_its_own_sampler() -> None:
    space = load_space(ROOT / "search_spaces" / "dcgan_mnist.yaml")
    study = run_study(space, 30)
    assert {t.params["loss"] for t in study.trials} == {"bce", "wgan-gp"}
    for trial in study.trials:
        assert ("n_critic" in trial.params) == (trial.params["loss"] == "wgan-gp")
        config = {**space.fixed, **trial.params}
        assert config["dataset"] == "mnist" and config["lr"] == trial.params["lr"]


@pytest.mark.parametrize("name", ["mlp_gan_mnist_grid.yaml", "dcgan_mnist_seed003.yaml"])
def test_grid_sampling_enumerates_exactly_the_grid(name: str) -> None:
    space = load_space(ROOT / "search_spaces" / name)
    grid = space.grid()
    assert space.num_samples == space.grid_size == len(list(itertools.product(*grid.values())))
    study = run_study(space, space.grid_size)
    seen = [tuple(t.params[k] for k in grid) for t in study.trials]
    assert sorted(seen, key=repr) == sorted(itertools.product(*grid.values()), key=repr)


def test_seed000_grid_is_the_reports_grid() -> None:
    grid = load_space(ROOT / "search_spaces" / "mlp_gan_mnist_grid.yaml").grid()
    assert grid == {"lr": [1e-4, 2e-4, 3e-4], "activation": ["relu", "leaky_relu", "prelu"],
                    "optimizer": ["adam", "adamax", "nadam", "amsgrad"]}


def test_grid_of_int_and_stepped_float_params(tmp_path: Path) -> None:
    data = edited(sampler={"type": "grid"}, params={
        "ngf": {"type": "int", "low": 16, "high": 64, "step": 16},
        "beta1": {"type": "float", "low": 0.0, "high": 0.9, "step": 0.3},
        "loss": {"type": "categorical", "choices": ["bce", "lsgan"]},
    })
    space = load_space(write(tmp_path, data))
    assert space.grid() == {"ngf": [16, 32, 48, 64], "beta1": [0.0, 0.3, 0.6, 0.9], "loss": ["bce", "lsgan"]}
    assert space.num_samples == space.grid_size == 32  # no num_samples in the YAML: the grid size
    study = run_study(space, 32, objective=lambda p: p["beta1"])
    assert {tuple(t.params.values()) for t in study.trials} == set(itertools.product(*space.grid().values()))


def test_grid_num_samples_is_clamped_with_a_note(tmp_path: Path) -> None:
    data = edited(sampler={"type": "grid"}, num_samples=50,
                  params={"loss": {"type": "categorical", "choices": ["bce", "lsgan", "hinge"]}})
    space = load_space(write(tmp_path, data))
    assert space.num_samples == 3 and "exceeds the grid" in space.describe()
    assert load_space(write(tmp_path, {**data, "num_samples": 2})).num_samples == 2
    assert space.with_overrides(num_samples=10).num_samples == 3
    assert space.with_overrides(num_samples=2, max_concurrent=1).max_concurrent == 1


def test_overrides_defaults_and_yaml_floats(tmp_path: Path) -> None:
    text = yaml.safe_dump(BASE, sort_keys=False).replace("0.0001", "1e-4")
    assert "1e-4" in text
    space = load_space(write(tmp_path, text))
    assert space.params["lr"].low == pytest.approx(1e-4)
    assert (space.num_samples, space.max_concurrent, space.max_failures) == (8, 2, 2)
    assert (space.resources.cpu, space.resources.gpu) == (1.0, 0.0)
    assert (space.scheduler.type, space.scheduler.max_t, space.scheduler.grace_period) == ("asha", 3, 1)
    assert space.sampler.type == "tpe" and isinstance(space.optuna_sampler(), optuna.samplers.TPESampler)
    changed = space.with_overrides(num_samples=20, max_concurrent=4)
    assert (changed.num_samples, changed.max_concurrent, space.num_samples) == (20, 4, 8)
    with pytest.raises(SpaceError, match="num_samples"):
        space.with_overrides(num_samples=0)
    assert space.define_by_run(optuna.create_study().ask()) == {"dataset": "mnist5k", "epochs": 3}


@pytest.mark.parametrize("kind, cls", [("random", "RandomSampler"), ("tpe", "TPESampler"),
                                       ("nsga2", "NSGAIISampler")])
def test_samplers(tmp_path: Path, kind: str, cls: str) -> None:
    data = edited(sampler={"type": kind, "seed": 3})
    if kind == "nsga2":
        data.update(metric=["fid", "inception_score"], mode=["min", "max"])
    space = load_space(write(tmp_path, data))
    assert type(space.optuna_sampler()).__name__ == cls
    assert space.scheduler.type == ("fifo" if kind == "nsga2" else "asha")
    first = [t.params for t in run_study(space, 5).trials]
    assert first == [t.params for t in run_study(space, 5).trials]  # seeded


def test_pbt_param_space_builds(tmp_path: Path) -> None:
    from ray.tune.search.sample import Domain

    data = edited(scheduler={"type": "pbt"}, sampler=None, num_samples=4, params={
        "lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        "beta1": {"type": "float", "low": 0.0, "high": 0.9},
        "noise_dim": {"type": "int", "low": 32, "high": 128, "step": 32},
        "n_critic": {"type": "int", "low": 1, "high": 5},
        "loss": {"type": "categorical", "choices": ["bce", "lsgan"]},
    })
    space = load_space(write(tmp_path, data))
    assert space.scheduler.type == "pbt" and space.scheduler.perturbation_interval >= 1
    tune_space = space.tune_param_space()
    assert tune_space["epochs"] == 3 and all(isinstance(tune_space[k], Domain) for k in space.params)
    for _ in range(20):
        sample = {k: tune_space[k].sample() for k in space.params}
        assert 1e-4 <= sample["lr"] <= 1e-3 and 0 <= sample["beta1"] <= 0.9
        assert sample["noise_dim"] in (32, 64, 96, 128) and 1 <= sample["n_critic"] <= 5
    mutations = space.pbt_mutations()
    assert mutations["loss"] == ["bce", "lsgan"] and mutations["noise_dim"] == [32, 64, 96, 128]
    assert isinstance(mutations["lr"], Domain)
    assert space.clip_to_bounds({"lr": 2e-3, "beta1": -0.1, "loss": "bce"}) == {
        "lr": 1e-3, "beta1": 0.0, "loss": "bce"}
    assert "pbt samples its own population" in space.describe()


BAD = [
    # (changes to BASE, field named, words in the message)
    ({"nmae": "x"}, "nmae", "Did you mean name"),
    ({"trainer": None}, "trainer", "missing"),
    ({"params__lr__type": "floaat"}, "params.lr.type", "unknown param type"),
    ({"params__lr__low": 0.01, "params__lr__high": 0.001}, "params.lr.low", "Swap them"),
    ({"params__lr__log": True, "params__lr__low": 0.0}, "params.lr.low", "log scale needs low > 0"),
    ({"params__loss__choices": []}, "params.loss.choices", "empty"),
    ({"trainer": "dcgn"}, "trainer", "Did you mean dcgan"),
    ({"sampler": {"type": "tpee"}}, "sampler.type", "unknown sampler"),
    ({"scheduler": {"type": "hyperband"}}, "scheduler.type", "unknown scheduler"),
    ({"metric": "test_acc"}, "metric", "never reports 'test_acc'"),
    ({"params__lrr": {"type": "float", "low": 0.1, "high": 0.2}}, "params.lrr", "Did you mean lr"),
    ({"fixed__epoch": 3}, "fixed.epoch", "Did you mean epochs"),
    ({"params__n_critic__when": {"losss": "wgan-gp"}}, "params.n_critic.when.losss", "not a param"),
    ({"params__n_critic__when": {"loss": "wgan"}}, "params.n_critic.when.loss", "never holds"),
    ({"resources": {"gpu": 1.5}}, "resources.gpu", "fractional gpu above 1"),
    ({"resources": {"cpu": 0}}, "resources.cpu", "greater than 0"),
    ({"sampler": {"type": "nsga2"}}, "metric", "2+ metrics"),
    ({"metric": ["fid", "kid"], "mode": ["min", "min"]}, "metric", "optimises one metric"),
    ({"metric": ["fid", "kid"], "mode": "min", "sampler": {"type": "nsga2"}}, "mode", "one mode per metric"),
    ({"mode": "minimize"}, "mode", "min or max"),
    ({"sampler": {"type": "grid"}}, "params.lr", "Add step"),
    ({"sampler": {"type": "grid"}, "params__lr": None}, "params.n_critic.when", "grid enumerates"),
    ({"scheduler": {"type": "pbt"}}, "params.n_critic.when", "pbt cannot mutate conditional"),
    ({"scheduler": {"type": "pbt"}, "params__n_critic": None, "sampler": {"type": "tpe"}},
     "sampler.type", "pbt samples its own population"),
    ({"metric": ["fid", "kid"], "mode": ["min", "min"], "sampler": {"type": "nsga2"},
      "scheduler": {"type": "asha"}}, "scheduler.type", "Use scheduler fifo"),
    ({"scheduler": {"type": "median", "reduction_factor": 3}}, "scheduler.reduction_factor", "Remove it"),
    ({"scheduler": {"type": "asha", "grace_period": 5}}, "scheduler.grace_period", "<= max_t (3)"),
    ({"num_samples": 0}, "num_samples", "greater than or equal to 1"),
    ({"fixed__lr": 2e-4}, "params.lr", "also in fixed"),
    ({"params__n_critic__low": 1.5}, "params.n_critic.low", "whole number"),
    ({"params__n_critic__step": 3}, "params.n_critic.high", "Set high to 4"),
    ({"params__lr__step": 1e-4}, "params.lr.step", "log with a step"),
    ({"params__loss__choices": ["bce", {"name": "lsgan"}]}, "params.loss.choices", "is neither a value"),
    ({"params__loss__when": {"n_critic": 2}}, "params.loss.when", "cycle"),
    ({"params__loss__low": 1}, "params.loss.low", "categorical param has no low"),
    ({"params__lr__choices": [1, 2]}, "params.lr.choices", "has no choices"),
    ({"params__lr__high": None}, "params.lr.high", "needs low and high"),
    ({"resources__gpus": 1}, "resources.gpus", "Did you mean gpu"),
    # the trainer's own validation (TrainerSpec.resolve), quoted
    ({"params__loss__choices": ["bce", "wgan"]}, "params.loss.choices",
     "rejects 'wgan': loss='wgan' is not one of: bce,"),
    ({"params__batch_size": {"type": "categorical", "choices": [64, 0]}}, "params.batch_size.choices",
     "batch_size=0 must be a number greater than 0"),
    ({"params__lr": {"type": "float", "low": -1e-3, "high": 1e-3}}, "params.lr.low", "rejects low -0.001"),
    ({"params__beta1": {"type": "float", "low": 0.0, "high": 1.5}}, "params.beta1.high",
     "beta1=1.5 must be a number in [0.0, 0.999]. Narrow the range"),
    ({"params__n_critic__low": 0}, "params.n_critic.low", "n_critic=0 must be a number greater than 0"),
    ({"fixed__lr": -1}, "fixed.lr", "rejects it: lr=-1 must be a number greater than 0"),
    ({"fixed__dataset": "mnist9k"}, "fixed.dataset", "dataset='mnist9k' is not one of"),
    ({"fixed__image_size": 30}, "fixed.image_size", "image_size=30 cannot be produced"),
]


@pytest.mark.parametrize("changes, field, words", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_input_names_file_and_field(tmp_path: Path, changes: dict, field: str, words: str) -> None:
    path = write(tmp_path, edited(**changes))
    with pytest.raises(SpaceError) as info:
        load_space(path)
    err = info.value
    assert (err.path, err.field) == (str(path), field)
    assert str(err).startswith(f"{path}: {field}: ") and words in str(err)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match=r"\(file\): cannot read it"):
        load_space(tmp_path / "nope.yaml")
    with pytest.raises(SpaceError, match="line 2: not valid YAML"):
        load_space(write(tmp_path, "name: x\n  trainer: [dcgan\n"))
    with pytest.raises(SpaceError, match=r"\(top\): expected a mapping"):
        load_space(write(tmp_path, "- a\n- b\n"))


def test_trainer_checks_each_value_with_the_conditions_it_needs(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    spec = get("dcgan")
    calls: list[dict] = []

    def resolve(overrides: dict) -> dict:
        calls.append(dict(overrides))
        return spec.resolve(overrides)

    checked = dataclasses.replace(spec, resolve=resolve)
    monkeypatch.setitem(TRAINERS, "dcgan", lambda: checked)
    data = edited(params__gp_weight={"type": "float", "low": 1.0, "high": 20.0, "when": {"n_critic": [3, 4]}})
    load_space(write(tmp_path, data))
    fixed = BASE["fixed"]
    assert calls == [fixed, {**fixed, "lr": 1e-4}, {**fixed, "lr": 1e-3}, {**fixed, "loss": "bce"},
                     {**fixed, "loss": "wgan-gp"}, {**fixed, "loss": "wgan-gp", "n_critic": 1},
                     {**fixed, "loss": "wgan-gp", "n_critic": 5},
                     {**fixed, "loss": "wgan-gp", "n_critic": 3, "gp_weight": 1.0},
                     {**fixed, "loss": "wgan-gp", "n_critic": 3, "gp_weight": 20.0}]
    assert [type(c.get("n_critic")) for c in calls[5:7]] == [int, int]


def test_optuna_distributions_rebuild_a_study_for_importances() -> None:
    space = load_space(ROOT / "search_spaces" / "dcgan_mnist.yaml")
    dists = space.optuna_distributions()
    assert list(dists) == list(space.params)
    assert dists["lr"] == optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)
    assert dists["n_critic"] == optuna.distributions.IntDistribution(1, 5)
    assert dists["batch_size"] == optuna.distributions.CategoricalDistribution([64, 128, 256])
    finished = run_study(space, 20, objective=lambda p: 100 * p["lr"] + p["beta1"]).trials
    for trial in finished:  # exactly what define_by_run suggested from
        assert trial.distributions == {name: dists[name] for name in trial.params}
    rebuilt = optuna.create_study(direction="minimize")
    rebuilt.add_trials([optuna.trial.create_trial(params=t.params, value=t.value,
                                                  distributions={k: dists[k] for k in t.params})
                        for t in finished])
    importances = optuna.importance.get_param_importances(rebuilt, params=["lr", "beta1", "loss"])
    assert set(importances) == {"lr", "beta1", "loss"}
    assert max(importances, key=importances.get) == "beta1"


def test_optuna_distributions_of_stepped_params(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, edited(sampler={"type": "grid"}, params={
        "ngf": {"type": "int", "low": 16, "high": 64, "step": 16},
        "beta1": {"type": "float", "low": 0, "high": 0.9, "step": 0.3},
    })))
    dists = space.optuna_distributions()
    assert dists == {"ngf": optuna.distributions.IntDistribution(16, 64, step=16),
                     "beta1": optuna.distributions.FloatDistribution(0.0, 0.9, step=0.3)}
    for trial in run_study(space, 4).trials:
        assert trial.distributions == dists


def test_run_name_says_what_differs() -> None:
    space = load_space(ROOT / "search_spaces" / "quickstart.yaml")
    config = {**space.fixed, "lr": 0.000213, "beta1": 0.4237, "loss": "lsgan", "batch_size": 64, "ngf": 48}
    assert space.run_name("t007", config) == "t007 lr=2.1e-4 beta1=0.42 lsgan bs=64 ngf=48"
    assert space.run_name("t1234", {"loss": "bce"}) == "t1234 bce"
    assert space.run_name("t000", {}) == "t000"


@pytest.mark.parametrize("value, shown", [(3e-4, "3e-4"), (1e-5, "1e-5"), (0.0015, "0.0015"), (0.5, "0.5"),
                                          (0.0, "0"), (12.34, "12"), (1234.5, "1200"), (35000.0, "3.5e4"),
                                          (-0.25, "-0.25")])
def test_run_name_numbers_have_two_significant_digits(tmp_path: Path, value: float, shown: str) -> None:
    space = load_space(write(tmp_path, BASE))
    assert space.run_name("t003", {"lr": value}) == f"t003 lr={shown}"


def test_run_name_bools_conditionals_and_truncation() -> None:
    space = load_space(ROOT / "search_spaces" / "dcgan_mnist.yaml")
    short = {"loss": "bce", "spectral_norm": True, "lr": 2e-4}
    assert space.run_name("t005", short) == "t005 bce spectral_norm lr=2e-4"  # in param order; no n_critic
    full = {"loss": "wgan-gp", "n_critic": 5, "spectral_norm": False, "noise_dim": 100, "lr": 1e-5,
            "beta1": 0.0, "batch_size": 256, "d_dropout": 0.25}
    name = space.run_name("t012", {**space.fixed, **full})
    assert name == "t012 wgan-gp n_critic=5 no-spectral_norm noise_dim=100 …"  # whole parts, <= 60
    assert space.run_name("t001", {"loss": "x" * 80}) == "t001 " + "x" * 54 + "…"


@pytest.mark.parametrize("fixed, field, words", [
    ({"lr": -1}, "fixed.lr", "lr=-1 must be a number greater than 0"),
    ({"freeze_epochs": 30}, "fixed.freeze_epochs", "freeze_epochs=30 is larger than epochs=20"),
])
def test_transfer_fixed_values_blame_the_right_key(tmp_path: Path, fixed: dict, field: str,
                                                    words: str) -> None:
    space = yaml.safe_load((ROOT / "search_spaces" / "transfer_freeze_mnist.yaml").read_text())
    space["fixed"].update(fixed)
    space["params"].pop("freeze_epochs")
    path = tmp_path / "transfer.yaml"
    path.write_text(yaml.safe_dump(space))
    with pytest.raises(SpaceError) as err:
        load_space(path)
    assert err.value.field == field and words in str(err.value)


@pytest.mark.parametrize("changes, field, words", [
    ({"fixed__amp": "fp16"}, "fixed.amp", "amp='fp16' is not supported"),
    ({"fixed__loss": "hinge", "fixed__label_smoothing": 0.1, "params__loss": None, "params__n_critic": None},
     "fixed.label_smoothing", "only bce and lsgan use it"),
    ({"fixed__label_smoothing": 0.1}, "params.loss.choices", "label_smoothing"),
])
def test_what_a_trial_would_reject_is_refused_by_the_dry_run(tmp_path: Path, changes: dict, field: str,
                                                              words: str) -> None:
    """The trainer's own rules, blamed on the key its ConfigError names, before anything starts."""
    with pytest.raises(SpaceError) as err:
        load_space(write(tmp_path, edited(**changes)))
    assert err.value.field == field and words in str(err.value)


@pytest.mark.parametrize("value, shown", [(0.999, "0.999"), (0.9999, "0.9999"), (0.99, "0.99"),
                                          (9999.6, "9999.6"), (0.0996, "0.0996")])
def test_run_name_never_rounds_a_value_into_another(tmp_path: Path, value: float, shown: str) -> None:
    """beta2 0.999 shown as `1` reads as beta2 = 1: a number keeps the digits that tell it apart."""
    space = load_space(write(tmp_path, BASE))
    assert space.run_name("t003", {"lr": value}) == f"t003 lr={shown}"


def test_two_trials_with_different_values_never_read_the_same(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, BASE))
    first, second, same = {"lr": 2.134e-4, "loss": "bce"}, {"lr": 2.137e-4, "loss": "bce"}, {"lr": 2.134e-4}
    assert space.run_name("t002", second, [first]) == "t002 lr=2.14e-4 bce"  # 2.1e-4 both at two digits
    assert space.run_name("t001", first) == "t001 lr=2.1e-4 bce"  # alone, two digits
    assert space.run_name("t003", {**same, "loss": "bce"}, [first]) == "t003 lr=2.1e-4 bce"  # alike: they are


def test_the_leaderboard_shows_distinct_values_distinctly() -> None:
    from orchestrator.tracking.leaderboard import shown_column

    assert shown_column(["0.999", "0.9", "0.0002134", "0.0002136", "bce", "64"]) == [
        "0.999", "0.9", "2.13e-4", "2.14e-4", "bce", "64"]
    assert shown_column(["0.00021341", "0.00021346"]) == ["2.134e-4", "2.135e-4"]
