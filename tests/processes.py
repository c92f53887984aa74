"""Stopping what a test started, and nothing else.

`ray stop --force` or `pkill -f ray::` would also end a user's own sweep running beside the suite.
A test starts its Ray head (or server) in a new session (`start_new_session=True`); every process
Ray spawns from it stays in that session, so the session id is the handle that stops them all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import psutil


def session_members(session: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session:
                members.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def stop_session(leader: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to every process of the leader's session, SIGKILL to those still there after grace_s."""
    session = leader.pid
    for process in session_members(session):
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(session_members(session), timeout=grace_s)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
    if leader.poll() is None:
        leader.wait(timeout=5)
    deadline = time.monotonic() + 5
    while session_members(session) and time.monotonic() < deadline:
        time.sleep(0.1)
