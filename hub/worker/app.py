"""The Celery application: broker settings, queues and the task modules it runs.

On RabbitMQ the queues are quorum queues, publishing waits for publisher confirms, tasks are
acknowledged late and re-queued when a worker dies. On the embedded default the broker is
kombu's SQLAlchemy transport on SQLite, so no server is needed.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from hub.core.settings import Settings, get_settings
from hub.core.tasks import ALL_QUEUES

# Modules that declare tasks with `hub_task`; the worker imports them at start.
TASK_MODULES = [
    "hub.requests.tasks",
    "hub.alerts.tasks",
    "privacy.tasks",
    "failover.tasks",
]


def _queues(settings: Settings) -> list[Queue]:
    exchange = Exchange("hub", type="direct", durable=True)
    arguments = {"x-queue-type": "quorum"} if settings.uses_rabbitmq else None
    return [
        Queue(name, exchange, routing_key=name, durable=True, queue_arguments=arguments)
        for name in ALL_QUEUES
    ]


def create_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    settings.ensure_var_dir()
    app = Celery("hub", broker=settings.effective_broker_url, include=TASK_MODULES)
    transport_options: dict[str, object] = {}
    if settings.uses_rabbitmq:
        transport_options["confirm_publish"] = True
    else:
        # kombu's SQLAlchemy transport hands these options to `create_engine`; the timeout makes
        # SQLite wait for a lock instead of failing while the API process writes.
        transport_options["connect_args"] = {"timeout": 30, "check_same_thread": False}
        # NOTE: kombu's SQLAlchemy transport hands every transport option to `create_engine`,
        # so its idle polling interval (1 s in kombu 5.7) cannot be shortened from here.
    app.conf.update(
        task_queues=_queues(settings),
        task_default_queue="intake",
        task_default_exchange="hub",
        task_default_routing_key="intake",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        result_backend=None,
        worker_prefetch_multiplier=1,
        # With late acks a task still running when the broker connection drops will be
        # redelivered to another worker, so this worker abandons it instead of finishing twice.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_pool_limit=10,
        worker_hijack_root_logger=False,
        # Task code logs through structlog to stderr; Celery's stdout redirect would re-log
        # each of those lines as a WARNING of its own logger.
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_create_missing_queues=False,
        enable_utc=True,
    )
    return app


celery_app = create_celery()


def declare_queues() -> None:
    """Declare every queue on the broker once, before several processes publish to it.

    kombu's SQLAlchemy transport creates a queue's row at the first publish to it. Two
    processes publishing at the same moment to a new embedded broker collide on that row's
    unique name, and one of them fails. `hub serve` calls this before it starts the API
    processes.
    """
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in celery_app.conf.task_queues:
            queue.bind(channel).declare()


def _after_fork(**_kwargs: object) -> None:
    """Give the forked pool process connection pools of its own.

    The parent keeps using the inherited connections, because its outbox relay and scheduler
    threads run there. So they are dropped here without being closed. Closing them would send
    PostgreSQL a Terminate message on the parent's sockets, and the parent's next statement
    would fail with "server closed the connection unexpectedly".
    """
    from hub.core.db import dispose_engines

    dispose_engines(close=False)


def _process_shutdown(pid: int | None = None, **_kwargs: object) -> None:
    # A pool process that exits leaves its metric files; live gauges must stop counting it.
    import os

    _record_encryption_counts()
    _close_alert_sessions()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and pid:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def _worker_shutdown(**_kwargs: object) -> None:
    _record_encryption_counts()
    _close_alert_sessions()


def _record_encryption_counts() -> None:
    """Record this process's pending encryption counts, which the DEK limits would miss."""
    from privacy.fields import record_pending_usage

    record_pending_usage()


def _close_alert_sessions(**_kwargs: object) -> None:
    """Close the process's pooled HTTP session of alert deliveries before it exits.

    Prefork pool processes leave through `os._exit`, which skips `atexit`, and a session
    left open is reported as "Unclosed client session" when it is collected.
    """
    from hub.alerts.fanout import close_http

    close_http()


from celery.signals import (  # noqa: E402
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

worker_process_init.connect(_after_fork, weak=False)
worker_process_shutdown.connect(_process_shutdown, weak=False)
# The solo and threads pools run tasks in the main process, which gets only this one.
worker_shutdown.connect(_worker_shutdown, weak=False)
