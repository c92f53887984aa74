"""The GAN-aware stop rule: the rule itself, `stop_when` in a space, and a real sweep where one
trial collapses and the same trial otherwise healthy runs to its end."""

from __future__ import annotations

import csv

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.errors import SpaceError
from orchestrator.space.collapse import RESULT_KEY, Stop, StopRule, Threshold, reason
from orchestrator.space.loading import load_space

DEFAULT = StopRule(2, (Threshold("sample_diversity", "below", 1e-4),))


# -- the rule -------------------------------------------------------------------------------------
def test_a_result_below_the_threshold_collapsed_from_the_first_epoch_judged():
    collapsed = {"epoch": 2, "sample_diversity": 3e-6, "fid": 241.0}
    assert reason({**collapsed, "epoch": 1}, DEFAULT) is None, "epoch 1 of a good run can look the same"
    why = reason(collapsed, DEFAULT)
    assert why.startswith("sample_diversity 3e-06 < 0.0001 at epoch 2: the samples have collapsed")
    assert reason({"epoch": 5, "sample_diversity": 0.2}, DEFAULT) is None
    assert reason({"epoch": 5, "sample_diversity": float("nan")}, DEFAULT) is None, "not judged"
    assert reason({"epoch": 5, "fid": 300.0}, DEFAULT) is None, "a metric the result lacks is not judged"
    assert reason(collapsed, None) is None


def test_any_threshold_crossed_stops_and_above_works_too():
    rule = StopRule(3, (Threshold("val_acc", "below", 0.15), Threshold("val_loss", "above", 5.0)))
    stalled = reason({"epoch": 3, "val_acc": 0.5, "val_loss": 9.0}, rule)
    assert stalled == "val_loss 9 > 5 at epoch 3 (the space's stop_when)"
    assert reason({"epoch": 3, "val_acc": 0.1, "val_loss": 1.0}, rule).startswith("val_acc 0.1 < 0.15")
    assert reason({"epoch": 2, "val_acc": 0.1}, rule) is None


def test_stop_leaves_its_reason_in_the_result_it_stops():
    stop = Stop(DEFAULT)
    healthy, collapsed = {"epoch": 2, "sample_diversity": 0.03}, {"epoch": 2, "sample_diversity": 1e-6}
    assert stop("t1", healthy) is False and RESULT_KEY not in healthy
    assert stop("t2", collapsed) is True and collapsed[RESULT_KEY] == reason(collapsed, DEFAULT)


# -- stop_when in a space ---------------------------------------------------------------------------
GAN_SPACE = {"name": "collapse", "trainer": "dcgan", "metric": "fid", "mode": "min",
             "fixed": {"dataset": "mnist5k", "epochs": 8},
             "params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}}}


def space_file(tmp_path, **changes):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**GAN_SPACE, **changes}))
    return path


CLASSIFIER = {"trainer": "classifier", "metric": "val_acc", "mode": "max", "fixed": {"epochs": 4},
              "params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}


@pytest.mark.parametrize("changes, rule", [
    ({}, DEFAULT),  # GAN trainers have the rule unless the space turns it off
    ({"stop_when": False}, None),
    ({"stop_when": {"sample_diversity": {"below": 0.01}, "from_epoch": 3}},
     StopRule(3, (Threshold("sample_diversity", "below", 0.01),))),
    ({"stop_when": {"inception_score": {"below": 1.05}}},
     StopRule(2, (*DEFAULT.thresholds, Threshold("inception_score", "below", 1.05)))),
    ({"stop_when": {"sample_diversity": None}}, None),  # null drops a default threshold
    (CLASSIFIER, None),  # other trainers have no rule unless they ask
    ({**CLASSIFIER, "stop_when": {"val_acc": {"below": 0.2}, "from_epoch": 3}},
     StopRule(3, (Threshold("val_acc", "below", 0.2),))),
])
def test_stop_when_defaults_and_overrides(tmp_path, changes, rule):
    assert load_space(space_file(tmp_path, **changes)).stop_when == rule


def test_set_turns_the_rule_off_and_dry_run_shows_it(tmp_path, capsys):
    assert load_space(space_file(tmp_path), {"stop_when": False}).stop_when is None
    assert load_space(space_file(tmp_path), {"stop_when.sample_diversity.below": 1e-3}).stop_when == \
        StopRule(2, (Threshold("sample_diversity", "below", 1e-3),))
    assert main(["sweep", str(space_file(tmp_path)), "--dry-run"]) == 0
    assert "stop when  sample_diversity below 0.0001, from epoch 2" in capsys.readouterr().out


@pytest.mark.parametrize("stop_when, field, words", [
    ({"sample_diversty": {"below": 0.01}}, "stop_when.sample_diversty", "Did you mean sample_diversity?"),
    ({"val_acc": {"below": 0.2}}, "stop_when.val_acc", "trainer 'dcgan' never reports 'val_acc'"),
    ({"sample_diversity": 0.01}, "stop_when.sample_diversity", "Write {below: NUMBER} or {above: NUMBER}"),
    ({"sample_diversity": {"under": 0.01}}, "stop_when.sample_diversity", "Write {below: NUMBER}"),
    ({"sample_diversity": {"below": "low"}}, "stop_when.sample_diversity", "Write {below: NUMBER}"),
    ({"sample_diversity": {"below": 0.1, "above": 0.9}}, "stop_when.sample_diversity", "Write {below"),
    ({"from_epoch": 0}, "stop_when.from_epoch", "a whole number >= 1"),
    ({"from_epoch": 9}, "stop_when.from_epoch", "after the last epoch (8)"),
    ({}, "stop_when", "or false to turn the rule off"),
    (True, "stop_when", "or false to turn the rule off"),
])
def test_bad_stop_when_is_refused_before_anything_starts(tmp_path, capsys, monkeypatch, stop_when, field,
                                                         words):
    path = space_file(tmp_path, stop_when=stop_when)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert info.value.field == field and words in str(info.value)

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray must not start for a bad space"))
    assert main(["sweep", str(path), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
                 "--storage", str(tmp_path / "sweeps")]) == 2
    assert f"{field}: " in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "sweeps").exists()


# -- a real sweep -----------------------------------------------------------------------------------
@pytest.mark.sweep
@pytest.mark.slow
def test_a_collapsing_trial_is_stopped_and_the_healthy_one_is_not(tmp_path, tiny, ray_address, capsys):
    """Two trials that differ only in their batch size, on the 180 tiny shapes at lr 1e-2. At batch 64
    (2 steps an epoch) the generator's batch norm keeps its first statistics, so every sample is the
    same image (sample_diversity about 3e-6 after epoch 2, FID flat at 64): collapsed. At batch 16 its
    samples spread out (about 0.03 from epoch 2 on, 300 times the threshold). FIFO never stops a trial,
    so the stop is the rule's; the space has no stop_when: the GAN default applies."""
    fixed = {**tiny, "max_train": None, "lr": 1e-2, "epochs": 3}
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "name": "tiny", "trainer": "dcgan", "metric": "fid", "mode": "min", "num_samples": 2,
        "max_concurrent": 1, "resources": {"cpu": 1}, "sampler": {"type": "grid", "seed": 0},
        "scheduler": {"type": "fifo"}, "fixed": {k: v for k, v in fixed.items() if k != "batch_size"},
        "params": {"batch_size": {"type": "categorical", "choices": [16, 64]}}}))
    assert main(["sweep", str(space), "--address", ray_address, "--storage", str(tmp_path / "sweeps"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]) == 0

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("tiny").experiment_id
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if r.data.tags.get("gansweep.role") == "sweep"]
    kids = {int(r.data.params["batch_size"]): r for r in runs if r is not parent}

    def diversity(run) -> dict[int, float]:
        return {m.step: m.value for m in client.get_metric_history(run.info.run_id, "sample_diversity")}

    collapsed, healthy = kids[64], kids[16]
    assert collapsed.info.status == "FINISHED" and collapsed.data.tags["gansweep.status"] == "collapsed"
    assert sorted(diversity(collapsed)) == [1, 2], "stopped after the first epoch the rule judges"
    assert diversity(collapsed)[2] < 1e-4
    assert collapsed.data.tags["gansweep.stop_reason"].startswith("sample_diversity ")
    assert " < 0.0001 at epoch 2: the samples have collapsed" in collapsed.data.tags["gansweep.stop_reason"]
    assert "gansweep.stopped_early" not in collapsed.data.tags

    assert healthy.info.status == "FINISHED" and healthy.data.tags["gansweep.status"] == "finished"
    assert sorted(diversity(healthy)) == [1, 2, 3]
    assert min(diversity(healthy)[e] for e in (2, 3)) > 1e-3

    err = capsys.readouterr().err
    assert "collapsed: sample_diversity " in err and "1 collapsed" in err, "the console agrees"
    board = client.download_artifacts(parent.info.run_id, "leaderboard.csv", str(tmp_path))
    with open(board) as f:
        statuses = sorted(row["status"] for row in csv.DictReader(f))
    assert statuses == ["collapsed", "finished"], "the leaderboard agrees too"

