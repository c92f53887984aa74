"""The tracking callback's write queue: order kept, merged calls, errors surfaced, drain waits."""

from __future__ import annotations

import threading

import pytest

from orchestrator.record_queue import RecordError, RecordQueue


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
