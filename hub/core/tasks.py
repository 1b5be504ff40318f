"""The one base class for Celery tasks, and the decorator features use to declare them.

Features declare tasks with `hub_task(...)` (a `shared_task`), so they never import the Celery
app; `hub.worker` builds the app and imports the task modules.

Every tenant task takes `tenant_id` as a keyword argument and is rejected without it; the rest
of its arguments are ids. Tasks are acknowledged late and are idempotent: running one twice
changes nothing the second time (state guards on the rows they touch).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog
from celery import Task, shared_task
from celery.exceptions import Reject
from sqlalchemy.exc import OperationalError

from hub.core.logging import bind_ids, clear_ids
from hub.core.metrics import TASK_LATENCY, TASKS

log = structlog.get_logger(__name__)


class HubTask(Task):
    """Base class: tenant check, ids bound to logs, outcome metrics."""

    # Set False on cross-tenant maintenance tasks that legitimately run without a tenant.
    requires_tenant = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tenant_id = kwargs.get("tenant_id")
        if self.requires_tenant and not tenant_id:
            log.error("task_rejected_without_tenant", task=self.name)
            TASKS.labels(task=self.name, outcome="rejected").inc()
            raise Reject("tenant task without tenant_id", requeue=False)

        task_id = getattr(self.request, "id", None)
        bind_ids(task=self.name, task_id=task_id, tenant_id=tenant_id)
        started = time.perf_counter()
        outcome = "error"
        try:
            result = super().__call__(*args, **kwargs)
            outcome = "ok"
            return result
        except Reject:
            outcome = "rejected"
            raise
        finally:
            TASKS.labels(task=self.name, outcome=outcome).inc()
            TASK_LATENCY.labels(task=self.name).observe(time.perf_counter() - started)
            clear_ids()


def hub_task(
    name: str,
    *,
    queue: str,
    requires_tenant: bool = True,
    max_retries: int = 8,
    time_limit: int = 300,
    **options: Any,
) -> Callable[[Callable[..., Any]], Task]:
    """Declare a task with an explicit name, its queue, late acks and time limits.

    A task that fails on the database (`OperationalError`: a server that restarted, a cut
    connection, an outage) is retried with backoff (2, 4, 8 ... up to 60 seconds, jittered),
    up to `max_retries` times, since every task is idempotent. The first statement after a
    server restart fails on a dead pooled connection, and SQLAlchemy then drops the pool, so
    the retry runs on new connections. A task may pass its own `autoretry_for`.
    """
    options.setdefault("autoretry_for", (OperationalError,))
    options.setdefault("retry_backoff", 2)
    options.setdefault("retry_backoff_max", 60)
    options.setdefault("retry_jitter", True)

    def decorator(func: Callable[..., Any]) -> Task:
        return shared_task(
            name=name,
            base=HubTask,
            bind=options.pop("bind", False),
            queue=queue,
            acks_late=True,
            reject_on_worker_lost=True,
            ignore_result=True,
            max_retries=max_retries,
            time_limit=time_limit,
            soft_time_limit=max(time_limit - 10, 1),
            requires_tenant=requires_tenant,
            **options,
        )(func)

    return decorator


# Queue names (DESIGN: intake, alerts.urgent, alerts.bulk, notify, overflow, maintenance).
QUEUE_INTAKE = "intake"
QUEUE_ALERTS_URGENT = "alerts.urgent"
QUEUE_ALERTS_BULK = "alerts.bulk"
QUEUE_NOTIFY = "notify"
QUEUE_OVERFLOW = "overflow"
QUEUE_MAINTENANCE = "maintenance"
ALL_QUEUES = (
    QUEUE_ALERTS_URGENT,
    QUEUE_INTAKE,
    QUEUE_ALERTS_BULK,
    QUEUE_OVERFLOW,
    QUEUE_NOTIFY,
    QUEUE_MAINTENANCE,
)
