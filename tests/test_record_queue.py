"""The tracking callback's write queue: order kept, merged calls, errors surfaced, drain waits."""

from __future__ import annotations

import threading

import pytest

from orchestrator.tracking.record_queue import RecordError, RecordQueue


def test_writes_run_in_submission_order_on_one_other_thread():
    queue, done, threads = RecordQueue(), [], set()

    def write(i: int) -> None:
        threads.add(threading.current_thread())
        done.append(i)

    for i in range(500):
        queue.submit(write, i)
    queue.close()
    assert done == list(range(500))
    assert len(threads) == 1 and threading.current_thread() not in threads


def test_drain_waits_for_a_write_in_progress():
    queue, release, done = RecordQueue(), threading.Event(), []
    queue.submit(release.wait)
    queue.submit(done.append, "after the slow write")
    assert queue.backlog == 2 and done == []
    threading.Timer(0.2, release.set).start()
    queue.drain()
    assert done == ["after the slow write"] and queue.backlog == 0
    queue.close()


def test_items_that_pile_up_for_one_key_go_to_one_call_in_order():
    queue, release, calls = RecordQueue(), threading.Event(), []
    queue.submit(release.wait)  # the writer is busy: what follows piles up
    for epoch in range(1, 6):
        queue.merge("run-a", calls.append, ("a", epoch))
        queue.merge("run-b", calls.append, ("b", epoch))
    release.set()
    queue.drain()
    assert calls == [[("a", e) for e in range(1, 6)], [("b", e) for e in range(1, 6)]]
    queue.merge("run-a", calls.append, ("a", 6))  # the waiting call has run: a new one
    queue.close()
    assert calls[-1] == [("a", 6)]


def test_a_failed_write_is_raised_at_drain_and_stops_the_writes_after_it():
    queue, done, release = RecordQueue("tracking"), [], threading.Event()

    def fail() -> None:
        release.wait()
        raise ConnectionError("server down")

    queue.submit(done.append, 1)
    queue.submit(fail)
    queue.submit(done.append, 2)
    queue.merge("run", done.append, 3)
    release.set()
    with pytest.raises(RecordError, match=r"tracking: .*server down.*2 writes after it were not done") as err:
        queue.drain()
    assert isinstance(err.value.__cause__, ConnectionError)
    assert done == [1], "nothing written after the failure (it may depend on what failed)"
    with pytest.raises(RecordError):  # never forgotten: every later call says so
        queue.submit(done.append, 4)
    with pytest.raises(RecordError):
        queue.close()
    assert done == [1]


def test_an_idle_queue_drains_and_closes_at_once():
    queue = RecordQueue()
    queue.drain()
    queue.close()
    with pytest.raises(RuntimeError, match="after close"):
        queue.submit(print)


# -- the tracking callback on its queue ---------------------------------------------------------

class Trial:
    """What the tracking callback reads of a Tune trial."""

    def __init__(self, trial_id: str, config: dict):
        self.trial_id, self.config, self.num_failures, self.checkpoint = trial_id, config, 0, None
        self.status, self.last_result = "RUNNING", {}

    def __str__(self) -> str:
        return "t001"

    def get_error(self) -> None:
        return None


@pytest.fixture
def tracked(tmp_path):
    """A tracking callback set up on a new sqlite store, with one started trial."""
    from pathlib import Path

    from mlflow import MlflowClient

    from orchestrator.space.loading import load_space
    from orchestrator.tracking import parent_run
    from orchestrator.tracking.callback import TrackingCallback

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = parent_run.experiment_id(client, uri, "queue")
    parent = client.create_run(experiment).info.run_id
    space = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml")
    callback = TrackingCallback(uri, experiment, parent, space, {})
    callback.setup()
    trial = Trial("trial_1", {"lr": 2e-4, "epochs": 4})
    callback.on_step_begin(0, [trial])
    callback.on_trial_start(0, [trial], trial)
    return callback, trial, client


def test_epochs_that_pile_up_are_logged_once_each_in_order(tracked):
    callback, trial, client = tracked
    lane, release = callback.lanes[0], threading.Event()
    callback.get_state()  # as before a snapshot of Tune's: the run is there
    lane.submit(release.wait)  # the writer is held up: the epochs pile up behind it
    for epoch in (1, 2, 2, 3, 1, 4):  # a retry reports epochs 2 and 1 again
        callback.on_trial_result(epoch, [trial], trial, {"epoch": epoch, "fid": 100.0 - epoch})
    assert lane.backlog == 2, "the results wait in one merged call"
    release.set()
    trial.status, trial.last_result = "TERMINATED", {"epoch": 4}
    callback.on_trial_complete(4, [trial], trial)
    callback.on_experiment_end([trial])
    (run,) = client.search_runs([callback.experiment], filter_string="tags.`gansweep.trial_id` = 'trial_1'")
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "fid"))
    assert history == [(1, 99.0), (2, 98.0), (3, 97.0), (4, 96.0)]
    assert run.info.status == "FINISHED" and run.data.tags["gansweep.status"] == "finished"


def test_a_failed_write_fails_the_next_event_and_the_end(tracked):
    from unittest import mock

    from mlflow.exceptions import MlflowException

    callback, trial, _ = tracked
    callback.get_state()  # the run exists
    with mock.patch.object(callback.client, "log_batch", side_effect=MlflowException("server down")):
        callback.on_trial_result(1, [trial], trial, {"epoch": 1, "fid": 99.0})
        with pytest.raises(RecordError, match="server down"):
            callback.get_state()  # Tune's next snapshot
    with pytest.raises(RecordError, match="server down"):
        callback.on_trial_result(2, [trial], trial, {"epoch": 2, "fid": 98.0})
    with pytest.raises(RecordError, match="server down"):
        callback.on_experiment_end([trial])
