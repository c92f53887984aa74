"""Writes to the tracking store, done in the order they were submitted by one background thread.

Tune's event loop hands its bookkeeping here and goes on: a write to an MLflow server costs
milliseconds to seconds (retries included), an event in the loop must not. `merge` lets the
writer catch up when it falls behind: items for one key that pile up while their call waits are
handed to that one call (one `log_batch` for several epochs of a run).

A failed write is never lost silently: the writer stops at the first error (what comes after it
may depend on it: a run that was not created, an earlier epoch), and every later `submit`,
`merge` or `drain` raises it as a `RecordError` naming how many writes were left undone.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any


class RecordError(RuntimeError):
    """A write to the tracking store failed; the writes after it were not done."""


class RecordQueue:
    def __init__(self, name: str = "record-writer"):
        self.name = name
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._waiting: dict[Hashable, list[Any]] = {}  # key -> items of the merged call not yet begun
        self._changed = threading.Condition()
        self._submitted = self._done = 0
        self._written = 0  # calls that succeeded
        self._error: BaseException | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call fn(*args) on the writer thread, after everything submitted before."""
        with self._changed:
            self._enqueue(fn, args)

    def merge(self, key: Hashable, fn: Callable[[list[Any]], Any], item: Any) -> None:
        """Call fn([item, ...]) on the writer thread: an item whose key already has a call waiting
        joins that call (in order) instead of queueing a new one."""
        with self._changed:
            if key in self._waiting:
                self._raise_if_failed()
                self._waiting[key].append(item)
            else:
                self._enqueue(self._run_merged, (key, fn))
                self._waiting[key] = [item]  # under the same lock: the call cannot begin before

    def drain(self) -> None:
        """Wait until every write submitted so far is done; raise RecordError if one failed."""
        with self._changed:
            target = self._submitted
            self._changed.wait_for(lambda: self._done >= target or self._error is not None)
            self._raise_if_failed()

    def close(self) -> None:
        """Drain, then stop the writer thread (also when a write failed: it skips the rest)."""
        try:
            self.drain()
        finally:
            with self._changed:
                self._closed = True
                self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()

    @property
    def backlog(self) -> int:
        """Calls submitted and not yet done."""
        with self._changed:
            return self._submitted - self._done

    # -- the writer thread ---------------------------------------------------------------------
    def _enqueue(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._raise_if_failed()
        if self._closed:
            raise RuntimeError(f"{self.name}: a write submitted after close")
        self._calls.append((fn, args))
        self._submitted += 1
        if self._thread is None:
            # A daemon: a driver that dies (a second Ctrl-C, an uncaught error) is not held up by
            # a server that does not answer. What was not written then is what Tune's snapshot
            # does not know either (the tracking callback drains before every snapshot).
            self._thread = threading.Thread(target=self._write, name=self.name, daemon=True)
            self._thread.start()
        self._changed.notify_all()

    def _write(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._calls or self._closed)
                if not self._calls:
                    return
                fn, args = self._calls.popleft()
                skip = self._error is not None
            if not skip:
                try:
                    fn(*args)
                except BaseException as error:  # noqa: BLE001 - kept, and raised on the loop's side
                    with self._changed:
                        self._error = error
            with self._changed:
                self._done += 1
                self._written += not skip and self._error is None
                self._changed.notify_all()

    def _run_merged(self, key: Hashable, fn: Callable[[list[Any]], Any]) -> None:
        with self._changed:
            items = self._waiting.pop(key)
        fn(items)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            undone = self._submitted - self._written - 1  # skipped or still queued, not the failed one
            raise RecordError(f"{self.name}: a write to the tracking store failed ({self._error!r}); "
                              f"{undone} writes after it were not done") from self._error
