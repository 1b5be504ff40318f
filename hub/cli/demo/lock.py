"""The lock that keeps a second `hub demo` off a var folder that a running demo uses.

A demo starts by deleting the database an earlier demo left in its var folder. A second demo on
the same folder would delete the database under the first one's API and worker. So a demo
takes an exclusive `fcntl.flock` on `demo.lock` in the var folder for as long as it runs, and
`hub serve` on the embedded default takes a shared one. The kernel releases the lock when its
process exits, however it exits, so the lock cannot go stale. The file also stores the pid of
the process that took the lock last, for the message that names it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from hub.cli.output import fail
from hub.core.settings import Settings

LOCK_FILE = "demo.lock"


def _lock(settings: Settings, mode: int) -> IO[str] | None:
    """Take `mode` on the lock file and write this pid in it, or return None when it is held."""
    settings.ensure_var_dir()
    path = settings.var_dir / LOCK_FILE
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _holder_pid(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


def _hold_or_exit(settings: Settings, mode: int, message: str) -> IO[str]:
    """Take `mode` on the lock file, or exit with code 2 and `message`, whose `{pid}` and
    `{var}` name the holder and the folder."""
    handle = _lock(settings, mode)
    if handle is None:
        pid = _holder_pid(settings.var_dir / LOCK_FILE)
        fail(message.format(pid=pid, var=settings.var_dir.resolve()))
    return handle


def hold_demo_lock(settings: Settings) -> IO[str]:
    """Lock the var folder for this demo, or exit with code 2 when another demo or `hub serve`
    uses it. Keep the returned file open for as long as the demo runs."""
    return _hold_or_exit(
        settings,
        fcntl.LOCK_EX,
        "another `hub demo` or `hub serve` (pid {pid}) is using {var}, and this demo would "
        "delete its database; stop that process first, or run this demo with HUB_VAR_DIR set "
        "to another folder",
    )


def hold_serve_lock(settings: Settings) -> IO[str]:
    """Share the var folder's lock with other `hub serve` processes, or exit with code 2 while
    a demo holds it. Keep the returned file open for as long as the server runs."""
    return _hold_or_exit(
        settings,
        fcntl.LOCK_SH,
        "`hub demo` (pid {pid}) is using {var}, and it deletes the database there when it "
        "starts; stop the demo first, or run `hub serve` with HUB_VAR_DIR set to another "
        "folder",
    )
