"""Celery tasks of alerts. Arguments are ids only; the work is in `hub.alerts.fanout`."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import OperationalError

from hub.alerts import fanout
from hub.alerts.service import DELIVER_TASK
from hub.core.tasks import QUEUE_ALERTS_URGENT, hub_task


# Declared on alerts.urgent. Notices pass queue alerts.bulk when they enqueue it, so the same
# task serves both and notices never wait in front of an emergency alert.
# An unexpected error (database or broker outage) retries with exponential backoff; the
# pending rows make the retry send only what is still unsent.
@hub_task(
    DELIVER_TASK,
    queue=QUEUE_ALERTS_URGENT,
    time_limit=900,
    autoretry_for=(OperationalError, OSError),
    retry_backoff=2,
    retry_backoff_max=300,
)
def deliver_batch(alert_id: str, batch: int, tenant_id: str) -> dict[str, Any]:
    return fanout.deliver_batch(alert_id, batch, tenant_id)
