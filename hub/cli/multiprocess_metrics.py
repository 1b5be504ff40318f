"""Prometheus multiprocess mode for `hub serve` and `hub worker`.

prometheus_client picks its value storage when it is first imported, from
`PROMETHEUS_MULTIPROC_DIR`. The hub's metrics module is imported before a command runs, so a
command that needs multiprocess mode sets the variable and re-executes itself once. The process
tree started that way (uvicorn workers, Celery pool processes, the embedded worker) writes to
one directory, `var/metrics/<pid>`, which `/metrics` or the worker exporter aggregates. The
directory is removed when the top process exits; directories of processes that no longer run
are removed at the next start.

When the variable is already set (by an operator, the load-test harness or the parent `hub
serve`), the directory is used as it is and never removed by the hub.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
from pathlib import Path

import structlog

from hub.core.settings import Settings

log = structlog.get_logger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
# Set in the re-executed process to the directory it owns and removes at exit.
_OWNER_ENV = "HUB_METRICS_DIR_OWNED"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(root: Path) -> None:
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if entry.is_dir() and entry.name.isdigit() and not _pid_running(int(entry.name)):
            shutil.rmtree(entry, ignore_errors=True)
            log.info("metrics_dir_removed", path=str(entry))


def ensure_multiprocess_metrics(settings: Settings, command: str) -> None:
    """Make sure this process writes multiprocess metrics, re-executing itself if needed.

    `command` is the `hub` subcommand running; when it is not on the command line (the command
    was called in-process, as tests do) nothing is re-executed and metrics stay per process.
    """
    owned = os.environ.get(_OWNER_ENV)
    if owned and os.environ.get(ENV) == owned:
        atexit.register(shutil.rmtree, owned, True)
        return
    if os.environ.get(ENV):
        Path(os.environ[ENV]).mkdir(parents=True, exist_ok=True)
        return

    if command not in sys.argv[1:]:
        log.warning("metrics_single_process", command=command)
        return

    root = (settings.var_dir / "metrics").resolve()
    _remove_stale(root)
    directory = root / str(os.getpid())
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[ENV] = str(directory)
    os.environ[_OWNER_ENV] = str(directory)
    sys.stdout.flush()
    sys.stderr.flush()
    # Same pid, same arguments, now with the variable set before prometheus_client loads.
    os.execv(sys.executable, [sys.executable, "-m", "hub.cli.main", *sys.argv[1:]])  # noqa: S606


def start_exporter(port: int, host: str = "127.0.0.1") -> None:
    """Serve this process tree's metrics on `host:port` (for workers on their own machines)."""
    from prometheus_client import start_http_server

    from hub.core.metrics import process_registry

    start_http_server(port, addr=host, registry=process_registry())
    log.info("metrics_exporter_started", host=host, port=port)
