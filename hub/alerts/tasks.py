"""Celery tasks of alerts. Arguments are ids only; the work is in `hub.alerts.fanout`."""

from __future__ import annotations

from typing import Any

from hub.alerts import fanout
from hub.alerts.service import DELIVER_TASK
from hub.core.tasks import QUEUE_ALERTS_URGENT, hub_task


# Declared on alerts.urgent; notices pass queue alerts.bulk when they enqueue it, so the same
# task serves both and notices never wait in front of an emergency alert.
@hub_task(DELIVER_TASK, queue=QUEUE_ALERTS_URGENT, time_limit=900)
def deliver_batch(alert_id: str, batch: int, tenant_id: str) -> dict[str, Any]:
    return fanout.deliver_batch(alert_id, batch, tenant_id)
