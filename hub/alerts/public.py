"""Public outputs: each published alert as CAP XML, and the active alerts of a tenant as an
Atom feed and as JSON.

An alert is published once its fan-out started (state sending, or sent, partly_failed or
failed once it finished) and stays in the active list until it expires, is cancelled or is
superseded by an Update. Drafts, held messages and Exercise or Test alerts are never
published.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from lxml import etree
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from hub.alerts import models as m
from hub.alerts.cap.mapping import to_dict
from hub.alerts.cap.parser import parse
from hub.core.clock import as_utc, utcnow
from hub.core.errors import NotFound

ATOM_NAMESPACE = "http://www.w3.org/2005/Atom"
PUBLISHED_STATES = (m.SENDING, *m.FINISHED_STATES, m.CANCELLED, m.SUPERSEDED, m.EXPIRED)


def published_alert(session: Session, alert_id: str) -> m.Alert:
    row = session.scalar(
        select(m.Alert).where(
            m.Alert.id == alert_id,
            m.Alert.state.in_(PUBLISHED_STATES),
            m.Alert.status == "Actual",
        )
    )
    if row is None:
        raise NotFound(f"alert {alert_id} not found")
    return row


def active_alerts(session: Session, now: datetime | None = None) -> list[m.Alert]:
    now = now or utcnow()
    rows = session.scalars(
        select(m.Alert)
        .where(
            m.Alert.state.in_((m.SENDING, *m.FINISHED_STATES)),
            m.Alert.status == "Actual",
            m.Alert.msg_type.in_(("Alert", "Update")),
            or_(m.Alert.expires_at.is_(None), m.Alert.expires_at > now),
        )
        .order_by(m.Alert.sent.desc())
    ).all()
    # SQLite returns naive times, so compare again in UTC to be exact on both backends.
    return [r for r in rows if r.expires_at is None or as_utc(r.expires_at) > now]


def alert_json(row: m.Alert) -> dict[str, Any]:
    result = parse(row.cap_xml)
    assert result.alert is not None
    return {"id": row.id, "state": row.state, "cap": to_dict(result.alert)}


def atom_feed(tenant_id: str, rows: list[m.Alert], base_url: str) -> bytes:
    """Build an Atom feed with one entry per alert; each entry links to the CAP XML."""
    feed = etree.Element(f"{{{ATOM_NAMESPACE}}}feed", nsmap={None: ATOM_NAMESPACE})
    etree.SubElement(feed, f"{{{ATOM_NAMESPACE}}}id").text = f"{base_url}/feed.atom"
    etree.SubElement(feed, f"{{{ATOM_NAMESPACE}}}title").text = f"Active alerts: {tenant_id}"
    updated = max((as_utc(r.sent) for r in rows), default=utcnow())
    etree.SubElement(feed, f"{{{ATOM_NAMESPACE}}}updated").text = updated.isoformat()
    etree.SubElement(feed, f"{{{ATOM_NAMESPACE}}}link", rel="self", href=f"{base_url}/feed.atom")
    for row in rows:
        cap = parse(row.cap_xml).alert
        assert cap is not None
        info = cap.infos[0] if cap.infos else None
        entry = etree.SubElement(feed, f"{{{ATOM_NAMESPACE}}}entry")
        etree.SubElement(
            entry, f"{{{ATOM_NAMESPACE}}}id"
        ).text = f"urn:hub:alert:{row.tenant_id}:{row.id}"
        title = (info.headline or info.event) if info else row.identifier
        etree.SubElement(entry, f"{{{ATOM_NAMESPACE}}}title").text = title or row.identifier
        etree.SubElement(entry, f"{{{ATOM_NAMESPACE}}}updated").text = as_utc(row.sent).isoformat()
        if info and info.description:
            etree.SubElement(entry, f"{{{ATOM_NAMESPACE}}}summary").text = info.description
        etree.SubElement(
            entry,
            f"{{{ATOM_NAMESPACE}}}link",
            rel="alternate",
            type="application/cap+xml",
            href=f"{base_url}/{row.id}.xml",
        )
    return etree.tostring(feed, xml_declaration=True, encoding="UTF-8", pretty_print=True)
