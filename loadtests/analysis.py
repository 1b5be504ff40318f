"""Figures of a load run from its raw records: latency percentiles, throughput, reconciliation
against the database, and the capacity criteria check.

Percentiles use the inverted-CDF definition over the raw samples, so every percentile is one
of the measured latencies and never above the maximum.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sqlalchemy import Engine, Integer, select

ALL_ENDPOINTS = "*"


@dataclass
class EndpointFigures:
    name: str
    requests: int
    failures: int
    requests_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


@dataclass
class Samples:
    """Raw samples of a run: start time (Unix seconds), endpoint name, latency (ms), success."""

    times: np.ndarray
    names: np.ndarray
    latencies: np.ndarray
    ok: np.ndarray

    @property
    def duration(self) -> float:
        if len(self.times) < 2:
            return 1.0
        return max(float(self.times.max() - self.times.min()), 1.0)


def read_samples(record_dir: Path) -> Samples:
    times, names, latencies, ok = [], [], [], []
    for path in sorted(record_dir.glob("samples-*.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.reader(handle):
                if len(row) != 4:
                    continue
                times.append(float(row[0]))
                names.append(row[1])
                latencies.append(float(row[2]))
                ok.append(row[3] == "1")
    return Samples(
        np.array(times, dtype=float),
        np.array(names, dtype=object),
        np.array(latencies, dtype=float),
        np.array(ok, dtype=bool),
    )


def percentile(latencies: np.ndarray, q: float) -> float:
    if latencies.size == 0:
        return 0.0
    return float(np.percentile(latencies, q, method="inverted_cdf"))


def figures_for(name: str, samples: Samples, mask: np.ndarray) -> EndpointFigures:
    latencies = samples.latencies[mask]
    count = int(mask.sum())
    return EndpointFigures(
        name=name,
        requests=count,
        failures=int((~samples.ok[mask]).sum()),
        requests_per_second=round(count / samples.duration, 3),
        p50_ms=round(percentile(latencies, 50), 1),
        p95_ms=round(percentile(latencies, 95), 1),
        p99_ms=round(percentile(latencies, 99), 1),
        max_ms=round(float(latencies.max()) if count else 0.0, 1),
    )


def endpoint_figures(samples: Samples) -> list[EndpointFigures]:
    """Return the figures of every endpoint, then of all endpoints together under `*`."""
    result = [
        figures_for(str(name), samples, samples.names == name)
        for name in sorted(set(samples.names.tolist()))
    ]
    result.append(figures_for(ALL_ENDPOINTS, samples, np.ones(len(samples.times), dtype=bool)))
    return result


def read_acks(record_dir: Path) -> list[dict[str, Any]]:
    acks = []
    for path in sorted(record_dir.glob("acks-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                acks.append(json.loads(line))
    return acks


@dataclass
class Reconciliation:
    acknowledged: int = 0
    stored: int = 0
    lost: int = 0
    lost_examples: list[str] = field(default_factory=list)
    alerts: int = 0
    recipients: int = 0
    deliveries_missing: int = 0
    deliveries_duplicated: int = 0
    notes: list[str] = field(default_factory=list)


def _chunks(values: list[str], size: int = 500) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def reconcile(acks: list[dict[str, Any]], engine: Engine) -> Reconciliation:
    """Check that every acknowledged request id, token or contact id is stored."""
    from failover.models import Contact
    from hub.core.db import unit_of_work
    from hub.core.tenancy import SystemContext
    from hub.requests.models import RequestToken, ServiceRequest

    result = Reconciliation()
    by_tenant: dict[str, dict[str, list[str]]] = {}
    for ack in acks:
        if ack.get("alert_id"):
            continue
        if ack.get("contact_id"):
            kind, value = "contacts", ack["contact_id"]
        elif ack.get("service_request_id"):
            kind, value = "ids", ack["service_request_id"]
        else:
            kind, value = "tokens", ack.get("token")
        wanted = by_tenant.setdefault(ack["tenant_id"], {"ids": [], "tokens": [], "contacts": []})
        wanted[kind].append(str(value))

    with unit_of_work(SystemContext("load test reconciliation"), engine=engine) as session:
        for tenant_id, wanted in by_tenant.items():
            for kind, model, column in (
                ("ids", ServiceRequest, ServiceRequest.id),
                ("tokens", RequestToken, RequestToken.token),
                ("contacts", Contact, Contact.id),
            ):
                values = sorted(set(wanted[kind]))
                found: set[str] = set()
                for chunk in _chunks(values):
                    found.update(
                        session.scalars(
                            select(column).where(model.tenant_id == tenant_id, column.in_(chunk))
                        )
                    )
                missing = [v for v in values if v not in found]
                result.acknowledged += len(values)
                result.stored += len(found)
                result.lost += len(missing)
                result.lost_examples += [f"{tenant_id}/{v}" for v in missing[:5]]
    result.lost_examples = result.lost_examples[:10]
    return result


def reconcile_alerts(acks: list[dict[str, Any]], engine: Engine, result: Reconciliation) -> None:
    """Check that every subscriber of each recorded alert has exactly one sent delivery.

    The expected count is the number of subscriptions the scenario created. The schema keeps
    one delivery row per (alert, subscriber, channel), so a count above one per key is a
    duplicate. A subscriber without a sent row is missing.
    """
    alerts = [a for a in acks if a.get("alert_id")]
    result.alerts = len(alerts)
    if not alerts:
        return
    from sqlalchemy import func

    from hub.alerts.models import DELIVERED, Delivery
    from hub.core.db import unit_of_work
    from hub.core.tenancy import SystemContext

    alert_ids = [str(a["alert_id"]) for a in alerts]
    expected = sum(int(a.get("subscribers") or 0) for a in alerts)
    with unit_of_work(SystemContext("load test reconciliation"), engine=engine) as session:
        rows = session.execute(
            select(
                Delivery.subscriber_id,
                func.count(),
                func.sum((Delivery.state == DELIVERED).cast(Integer)),
            )
            .where(Delivery.alert_id.in_(alert_ids))
            .group_by(Delivery.alert_id, Delivery.subscriber_id, Delivery.channel)
        ).all()
    result.recipients = len(rows)
    result.deliveries_duplicated += sum(1 for _subscriber, count, _sent in rows if count > 1)
    delivered = sum(1 for _subscriber, _count, sent in rows if sent)
    result.deliveries_missing = max(expected - delivered, 0)


@dataclass
class Check:
    criterion: str
    limit: float
    measured: float | None
    passed: bool


def load_criteria(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"criteria file {path} must be a YAML mapping")
    return data


def check_criteria(
    criteria: dict[str, Any], figures: list[EndpointFigures], reconciliation: Reconciliation
) -> list[Check]:
    """Compare the run's figures with the criteria; a missing endpoint fails its criteria."""
    by_name = {f.name: f for f in figures}
    overall = by_name[ALL_ENDPOINTS]
    checks: list[Check] = []

    if "min_requests_per_second" in criteria:
        limit = float(criteria["min_requests_per_second"])
        measured = overall.requests_per_second
        checks.append(Check("requests per second >=", limit, measured, measured >= limit))
    if "max_failure_ratio" in criteria:
        limit = float(criteria["max_failure_ratio"])
        ratio = overall.failures / overall.requests if overall.requests else 1.0
        checks.append(Check("failure ratio <=", limit, round(ratio, 5), ratio <= limit))
    limit_lost = float(criteria.get("max_lost", 0))
    lost = float(reconciliation.lost)
    checks.append(Check("lost acknowledged requests <=", limit_lost, lost, lost <= limit_lost))
    duplicated = float(reconciliation.deliveries_duplicated)
    checks.append(Check("duplicated alert deliveries <=", 0, duplicated, duplicated == 0))
    if reconciliation.alerts:
        missing = float(reconciliation.deliveries_missing)
        checks.append(Check("missing alert deliveries <=", 0, missing, missing == 0))

    for name, limits in (criteria.get("endpoints") or {}).items():
        endpoint = by_name.get(name)
        for key in ("p95_ms", "p99_ms"):
            if key not in limits:
                continue
            limit = float(limits[key])
            if endpoint is None or endpoint.requests == 0:
                checks.append(Check(f"{name} {key} <= (no samples)", limit, None, False))
                continue
            measured = getattr(endpoint, key)
            checks.append(Check(f"{name} {key} <=", limit, measured, measured <= limit))
    return checks
