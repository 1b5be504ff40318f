"""`hub serve` and `hub worker`.

With no configuration `hub serve` is the embedded default: SQLite and kombu's SQLAlchemy
transport under ./var, with one worker process started alongside the API. With
HUB_DATABASE_URL and HUB_BROKER_URL pointing at PostgreSQL and RabbitMQ it serves the API only,
and `hub worker` processes are started separately, as many as needed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import structlog
import typer

from hub.cli.demo.lock import hold_serve_lock
from hub.cli.multiprocess_metrics import ensure_multiprocess_metrics, start_exporter
from hub.cli.output import cli_errors
from hub.core.logging import configure_logging
from hub.core.migrate import upgrade
from hub.core.settings import get_settings
from hub.core.tasks import ALL_QUEUES

log = structlog.get_logger(__name__)

# How often a worker started by `hub serve` or `hub demo` checks that its parent still runs.
PARENT_CHECK_SECONDS = 1.0


def start_worker_process(
    *, concurrency: int = 2, pool: str = "threads", env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `hub worker` as a child process (the embedded default's worker, and the demo's).

    The child runs in a process group of its own, so Ctrl-C in a terminal reaches only the
    parent, which stops the child with `stop_process` after its own shutdown. The child stops
    by itself when the parent exits without stopping it.
    """
    command = [
        sys.executable,
        "-m",
        "hub.cli.main",
        "worker",
        "--concurrency",
        str(concurrency),
        "--pool",
        pool,
        "--parent-pid",
        str(os.getpid()),
    ]
    # The child writes to stderr only, so a parent's `--json` output on stdout stays clean
    # of Celery's start-up banner.
    return subprocess.Popen(
        command, env={**os.environ, **(env or {})}, stdout=sys.stderr, process_group=0
    )


def stop_process(child: subprocess.Popen[bytes], *, timeout: float = 30) -> None:
    """Ask a child to finish its running work (SIGTERM), and kill it after `timeout` seconds."""
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("child_killed_after_timeout", pid=child.pid, timeout_seconds=timeout)
        child.kill()
        child.wait()


def describe_exit(code: int) -> str:
    """Return how a child process ended, from its `Popen.returncode`."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            return f"was killed by signal {-code}"
        return f"was killed by signal {-code} ({name})"
    return f"exited with code {code}"


class _ChildWatch:
    """The thread that stops `hub serve` with SIGTERM when its worker child ends while the API
    still runs, so that requests are not accepted for hours with nothing to route them.

    A worker that exits with code 0 finished a warm shutdown that someone asked for, such as a
    supervisor that sends SIGTERM to every process of the service at once: serve then stops
    cleanly too. Any other end is a failure, and serve exits with status 1.
    """

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        self.child = child
        self.stopping = False
        self.failed = False
        threading.Thread(target=self._watch, name="worker-watch", daemon=True).start()

    def _watch(self) -> None:
        code = self.child.wait()
        if self.stopping:
            return
        if code == 0:
            log.info("worker_stopped", pid=self.child.pid, action="hub serve stops too")
        else:
            self.failed = True
            log.error(
                "worker_failed",
                pid=self.child.pid,
                exit=describe_exit(code),
                action="hub serve stops; see the worker's log above, then start hub serve again",
            )
        os.kill(os.getpid(), signal.SIGTERM)


def _record_worker_start(node_name: str) -> None:
    """Write this worker's start to the database for `hub_worker_recent_starts`.

    A failure is logged and the worker starts anyway: the record feeds an alert, and a worker
    that cannot write it can still run tasks.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from hub.core.worker_starts import record_start

    host = socket.gethostname()
    try:
        record_start(host, node_name.replace("%h", host), os.getpid())
    except SQLAlchemyError as exc:
        log.warning("worker_start_not_recorded", error=type(exc).__name__, detail=str(exc))


def _watch_parent(parent_pid: int) -> None:
    """Start a thread that shuts this worker down warmly once `parent_pid` is no longer its
    parent, such as after the parent was killed."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        log.warning("worker_parent_gone", parent_pid=parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8311, min=1, max=65535, help="TCP port to listen on."),
    processes: int = typer.Option(1, "--processes", min=1, help="API processes (uvicorn workers)."),
    worker: bool = typer.Option(
        None,
        "--worker/--no-worker",
        help="Also start a worker process. Default: on for the embedded default, off otherwise.",
    ),
) -> None:
    """Run the HTTP API (and, on the embedded default, a worker beside it)."""
    import uvicorn

    settings = get_settings()
    ensure_multiprocess_metrics(settings, "serve")
    configure_logging(settings)
    var_lock = None
    if not settings.database_url and not settings.broker_url:
        # `hub demo` deletes the embedded database when it starts, so this server and a demo
        # must not share a var folder.
        var_lock = hold_serve_lock(settings)
    with cli_errors():
        upgrade()

    if not settings.uses_rabbitmq:
        # RabbitMQ declares a queue atomically, but the embedded broker does not.
        from hub.worker.app import declare_queues

        declare_queues()
    watch: _ChildWatch | None = None

    def exit_on_sigterm(_signum: int, _frame: object) -> None:
        raise SystemExit(1 if watch is not None and watch.failed else 0)

    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler
    # that was installed before it started. This handler turns that into an exit, so the
    # `finally` below still stops the worker child instead of leaving it orphaned. It is
    # installed before the child starts, for a child that fails at once.
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    start_worker = settings.is_embedded if worker is None else worker
    if start_worker:
        watch = _ChildWatch(start_worker_process())
    log.info(
        "serve_starting",
        host=host,
        port=port,
        processes=processes,
        worker=watch is not None,
        embedded=settings.is_embedded,
    )
    try:
        uvicorn.run(
            "hub.api.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=processes,
            log_level="warning",
            timeout_graceful_shutdown=20,
        )
    finally:
        if watch is not None:
            watch.stopping = True
            stop_process(watch.child)
        log.info("serve_stopped")
        if var_lock is not None:
            var_lock.close()
    # With --processes above 1, uvicorn returns after SIGTERM instead of raising it again.
    if watch is not None and watch.failed:
        raise typer.Exit(1)


def worker(
    queues: str = typer.Option(",".join(ALL_QUEUES), help="Comma-separated queues to consume."),
    concurrency: int = typer.Option(2, min=1, help="Worker processes or threads."),
    pool: str = typer.Option("prefork", help="Celery pool: prefork, threads or solo."),
    relay: bool = typer.Option(True, "--relay/--no-relay", help="Also run an outbox relay."),
    metrics_port: int = typer.Option(
        0,
        "--metrics-port",
        min=0,
        max=65535,
        help="Serve this worker's Prometheus metrics on 127.0.0.1 at this TCP port; 0: off.",
    ),
    node_name: str = typer.Option(
        "",
        "--hostname",
        help="Celery node name, unique per worker, such as intake1@%h. Default: hub-PID@%h.",
    ),
    schedule: bool = typer.Option(
        True,
        "--schedule/--no-schedule",
        help="Also enqueue periodic tasks (SLA check, delivery sweep) when they are due.",
    ),
    parent_pid: int = typer.Option(
        0,
        "--parent-pid",
        min=0,
        hidden=True,
        help="Shut down when this process is no longer the parent; 0: off.",
    ),
) -> None:
    """Run a Celery worker on the configured broker.

    SIGTERM is a warm shutdown: the worker stops taking messages, finishes the tasks it is
    running and acknowledges them; messages it had not started go back to the queue.
    """
    settings = get_settings()
    ensure_multiprocess_metrics(settings, "worker")

    from hub.api.runtime import celery_publisher
    from hub.core.outbox import OutboxRelay
    from hub.worker.app import celery_app
    from hub.worker.schedule import Scheduler

    configure_logging(settings)
    if parent_pid:
        _watch_parent(parent_pid)
    with cli_errors():
        upgrade()
    node_name = node_name or f"hub-{os.getpid()}@%h"
    _record_worker_start(node_name)
    if metrics_port:
        start_exporter(metrics_port)

    outbox_relay = None
    if relay:
        outbox_relay = OutboxRelay(
            celery_publisher,
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
        )
        outbox_relay.start()
    scheduler = Scheduler() if schedule else None
    if scheduler is not None:
        scheduler.start()
    log.info(
        "worker_starting",
        queues=queues,
        concurrency=concurrency,
        pool=pool,
        broker="rabbitmq" if settings.uses_rabbitmq else "embedded",
        # Task results are never stored: they could hold what a task read.
        results=str(celery_app.conf.result_backend or "disabled").split(":", 1)[0],
    )
    try:
        celery_app.worker_main(
            [
                # No start-up banner: `hub worker` logs its own start event.
                "--quiet",
                "worker",
                "--queues",
                queues,
                "--concurrency",
                str(concurrency),
                "--pool",
                pool,
                "--loglevel",
                settings.log_level,
                # Two workers with one node name collide on Celery's exclusive remote-control
                # queue, and RabbitMQ stops the second one; the process id keeps names unique.
                "--hostname",
                node_name,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ]
        )
    finally:
        if scheduler is not None:
            scheduler.stop()
        if outbox_relay is not None:
            outbox_relay.stop()
