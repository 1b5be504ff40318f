"""The privacy report for auditors: per control, the evidence and a pass or fail.

Evidence comes from the stored data itself. Ciphertext columns are scanned row by row in SQL
rather than trusted from the schema. Key ages come from the key rows, decryptions and exports
from the audit log, and the audit chain is verified in full.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, column, func, literal, select, table
from sqlalchemy.orm import Session

from hub.core.clock import as_utc
from hub.core.db import read_one_snapshot
from privacy.access import (
    ACTION_DECRYPT,
    ACTION_DECRYPT_BATCH,
    ACTION_DECRYPT_REJECTED,
    UNDECLARED_PURPOSE,
)
from privacy.audit import chain_of
from privacy.audit_verify import hub_signing_keys, verify_database
from privacy.fields import FORMAT_V1, MIN_CIPHERTEXT_BYTES
from privacy.keys import Keyring
from privacy.models import KIND_DEK, KIND_KEK, AuditAnchor, AuditEntry
from privacy.open_data import ACTION_OPEN_DATA_EXPORT
from privacy.purposes import declared_purposes
from privacy.registry import encrypted_tables
from privacy.retention import (
    audit_cutoff,
    audit_entries_past_period,
    expired_rows,
    rows_to_delete,
    tenant_privacy_settings,
)
from privacy.rotation import rows_per_version
from privacy.shred import ACTION_CRYPTO_SHRED

# A DEK or KEK older than this many days fails the key-age control (an annual rotation policy).
MAX_KEY_AGE_DAYS = 365


def control(control_id: str, title: str, passed: bool, evidence: dict[str, Any]) -> dict[str, Any]:
    """Return one control of the report: its id, title, pass or fail, and evidence."""
    return {"id": control_id, "title": title, "passed": passed, "evidence": evidence}


def encryption_coverage(session: Session, tenant_id: str) -> dict[str, Any]:
    """Scan every registered ciphertext column: a stored value counts as encrypted only when it
    has the field-cipher header and at least the minimum ciphertext length."""
    columns = []
    stored = encrypted = 0
    header = bytes([FORMAT_V1])
    for entry in encrypted_tables():
        sql = table(entry.table, column(entry.tenant_column), *(column(c) for c in entry.columns))
        aggregates = []
        for name in entry.columns:
            value = sql.c[name]
            aggregates.append(func.count(value))
            is_ciphertext = (func.substr(value, 1, 1) == literal(header)) & (
                func.length(value) >= MIN_CIPHERTEXT_BYTES
            )
            aggregates.append(func.sum(case((is_ciphertext, 1), else_=0)))
        row = session.execute(
            select(*aggregates).where(sql.c[entry.tenant_column] == tenant_id)
        ).one()
        for index, name in enumerate(entry.columns):
            count, good = int(row[2 * index] or 0), int(row[2 * index + 1] or 0)
            stored += count
            encrypted += good
            columns.append(
                {"table": entry.table, "column": name, "stored": count, "encrypted": good}
            )
    share = 1.0 if stored == 0 else encrypted / stored
    return control(
        "encryption_coverage",
        "Personal-data fields are stored encrypted",
        encrypted == stored,
        {
            "stored_values": stored,
            "encrypted_values": encrypted,
            "share": share,
            "columns": columns,
        },
    )


def key_state(session: Session, tenant_id: str, now: datetime) -> dict[str, Any]:
    ring = Keyring.load(session, tenant_id)
    primary = ring.primary_version(KIND_DEK)
    ages = {}
    for kind in (KIND_KEK, KIND_DEK):
        row = ring.rows[(kind, ring.primary_version(kind))]
        newest = as_utc(row.rewrapped_at or row.created_at) if kind == KIND_KEK else None
        created = newest or as_utc(row.created_at)
        ages[kind] = round((now - created).total_seconds() / 86400, 2)
    per_version = rows_per_version(session, tenant_id)
    behind = sum(n for v, n in per_version.items() if v != primary)
    return control(
        "key_rotation",
        f"Primary DEK and KEK are younger than {MAX_KEY_AGE_DAYS} days",
        all(age <= MAX_KEY_AGE_DAYS for age in ages.values()),
        {
            "primary_dek_version": primary,
            "dek_age_days": ages[KIND_DEK],
            "kek_age_days": ages[KIND_KEK],
            "dek_versions": ring.versions(KIND_DEK),
            "rows_per_dek_version": {str(v): n for v, n in sorted(per_version.items())},
            "rows_awaiting_reencryption": behind,
        },
    )


def decryption_entries(session: Session, tenant_id: str) -> list[AuditEntry]:
    """Return the tenant's audit entries of decryptions, rejected ones included, oldest first."""
    return list(
        session.scalars(
            select(AuditEntry)
            .where(
                AuditEntry.tenant_id == tenant_id,
                AuditEntry.action.in_(
                    (ACTION_DECRYPT, ACTION_DECRYPT_BATCH, ACTION_DECRYPT_REJECTED)
                ),
            )
            .order_by(AuditEntry.seq)
        ).all()
    )


def decryptions(entries: list[AuditEntry]) -> dict[str, Any]:
    by_role_purpose: Counter[tuple[str, str]] = Counter()
    rejected: Counter[tuple[str, str]] = Counter()
    without_purpose = by_auditor = made = 0
    for entry in entries:
        details = entry.details or {}
        roles = ",".join(details.get("roles") or []) or "none"
        purpose = details.get("purpose")
        if entry.action == ACTION_DECRYPT_REJECTED:
            # The evidence that the controls held: the call decrypted nothing.
            rejected[(roles, str(details.get("reason") or "none"))] += 1
            continue
        made += 1
        if not purpose:
            without_purpose += 1
        if "auditor" in roles.split(","):
            by_auditor += 1
        by_role_purpose[(roles, purpose or "none")] += 1
    return control(
        "decryption_audit",
        "Every decryption names a purpose and none was made by an auditor",
        without_purpose == 0 and by_auditor == 0,
        {
            "decryptions": made,
            "without_purpose": without_purpose,
            "by_auditor": by_auditor,
            "by_role_and_purpose": [
                {"roles": roles, "purpose": purpose, "count": count}
                for (roles, purpose), count in sorted(by_role_purpose.items())
            ],
            "rejected": sum(rejected.values()),
            "rejected_by_role_and_reason": [
                {"roles": roles, "reason": reason, "count": count}
                for (roles, reason), count in sorted(rejected.items())
            ],
        },
    )


def purpose_limitation(
    session: Session, tenant_id: str, entries: list[AuditEntry], now: datetime
) -> dict[str, Any]:
    """Compare the purposes of the tenant's decryptions with the purposes declared today.

    A purpose that no one declares can only come from audit entries written before purposes
    were checked, or from a purpose the manifest has since removed.
    """
    declared = declared_purposes(session, tenant_id)
    codes = {purpose.code for purpose in declared}
    by_purpose: Counter[str] = Counter()
    rejected_undeclared = 0
    for entry in entries:
        details = entry.details or {}
        if entry.action == ACTION_DECRYPT_REJECTED:
            if details.get("reason") == UNDECLARED_PURPOSE:
                rejected_undeclared += 1
            continue
        by_purpose[str(details.get("purpose") or "none")] += 1
    undeclared = sorted(purpose for purpose in by_purpose if purpose not in codes)
    return control(
        "purpose_limitation",
        "Every decryption was for a purpose that the hub or the tenant declares",
        not undeclared,
        {
            "period": {
                "from": as_utc(entries[0].at).isoformat() if entries else None,
                "to": now.isoformat(timespec="seconds"),
            },
            "declared_purposes": [
                {
                    "code": purpose.code,
                    "declared_by": purpose.declared_by,
                    "description": purpose.description,
                }
                for purpose in declared
            ],
            "decryptions_by_purpose": [
                {"purpose": purpose, "count": count, "declared": purpose in codes}
                for purpose, count in sorted(by_purpose.items())
            ],
            "undeclared_purposes_used": undeclared,
            "rejected_for_undeclared_purpose": rejected_undeclared,
        },
    )


# Scope of the k-anonymity control, stated in its evidence.
K_ANONYMITY_SCOPE = (
    "the open-data export files only. The live Open311 API shows every request with its exact "
    "time, coarsening only the location per service, so k-anonymity does not hold against it. "
    "An export with Open311 ids can be joined to the API record by record."
)


def exports(session: Session, tenant_id: str, required_k: int) -> dict[str, Any]:
    entries = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.tenant_id == tenant_id, AuditEntry.action == ACTION_OPEN_DATA_EXPORT)
        .order_by(AuditEntry.seq)
    ).all()
    listing = [
        {
            "at": as_utc(e.at).isoformat(),
            "k": (e.details or {}).get("k"),
            "published_records": (e.details or {}).get("published_records"),
            "suppressed_records": (e.details or {}).get("suppressed_records"),
            "format": (e.details or {}).get("format"),
            # Exports recorded before these were kept have none.
            "free_text": (e.details or {}).get("free_text"),
            "files": (e.details or {}).get("files", []),
            "sha256": (e.details or {}).get("sha256", []),
            # Exports recorded before the ids choice existed published Open311 ids.
            "ids": (e.details or {}).get("ids", "open311"),
        }
        for e in entries
    ]
    weak = [item for item in listing if int(item["k"] or 0) < required_k]
    return control(
        "open_data_k_anonymity",
        f"Every open-data export file met k >= {required_k} (not the live Open311 API)",
        not weak,
        {
            "covers": K_ANONYMITY_SCOPE,
            "required_k": required_k,
            "exports": listing,
            "below_required_k": len(weak),
            "with_open311_ids": sum(1 for item in listing if item["ids"] == "open311"),
        },
    )


def audit_period(session: Session, tenant_id: str, cutoff: datetime | None) -> dict[str, Any]:
    """Return the evidence of the `audit` period: entries of the tenant's chain still older
    than the cutoff, and the signed anchor that the retention purge left, if any."""
    anchor = session.get(AuditAnchor, chain_of(tenant_id))
    return {
        "enforced": cutoff is not None,
        "cutoff": cutoff.isoformat(timespec="seconds") if cutoff is not None else None,
        "entries_past_period": (
            audit_entries_past_period(session, tenant_id, cutoff) if cutoff is not None else 0
        ),
        # Sequence numbers start at 1, so the anchor's seq is the count of entries deleted.
        "entries_removed": anchor.seq if anchor is not None else 0,
        "anchor": (
            {
                "seq": anchor.seq,
                "hash": anchor.hash,
                "cutoff": as_utc(anchor.cutoff).isoformat(timespec="seconds"),
                "signed_at": as_utc(anchor.signed_at).isoformat(timespec="seconds"),
                "public_key": anchor.public_key,
            }
            if anchor is not None
            else None
        ),
    }


def retention(
    session: Session, tenant_id: str, retention_days: dict[str, int], now: datetime
) -> dict[str, Any]:
    expired = expired_rows(session, tenant_id, retention_days, now=now)
    overdue = rows_to_delete(session, tenant_id, retention_days, now=now)
    audit_evidence = audit_period(session, tenant_id, audit_cutoff(retention_days, now))
    return control(
        "retention",
        "No personal data or audit entry is kept past the tenant's retention periods",
        sum(expired.values()) == 0
        and sum(overdue.values()) == 0
        and audit_evidence["entries_past_period"] == 0,
        {
            "retention_days": retention_days,
            "rows_past_retention": expired,
            "rows_past_deletion": overdue,
            "audit_period": audit_evidence,
        },
    )


def audit_chain(session: Session, tenant_id: str) -> dict[str, Any]:
    """Verify the tenant's chain in full. A chain that the retention purge shortened verifies
    from its signed anchor, which the evidence names under `anchors`."""
    trusted = hub_signing_keys(session)
    result = verify_database(session, tenant_id=tenant_id, trusted_keys=trusted)
    evidence = {**result.as_dict(), "trusted_keys": sorted(trusted)}
    return control(
        "audit_chain",
        "The tenant's audit chain verifies (hashes, links, signed checkpoints and anchor)",
        result.ok,
        evidence,
    )


def shredded_keys(session: Session, tenant_id: str) -> dict[str, Any] | None:
    """Return the crypto-shredding control of a tenant that has no keys left, or None.

    Returns None while the tenant has key rows or when no `keys.crypto_shred` entry exists (a
    tenant never onboarded).
    """
    keys = table("privacy_tenant_keys", column("tenant_id"))
    remaining = session.execute(
        select(func.count()).select_from(keys).where(keys.c.tenant_id == tenant_id)
    ).scalar()
    if remaining:
        return None
    entry = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.chain == chain_of(tenant_id), AuditEntry.action == ACTION_CRYPTO_SHRED)
        .order_by(AuditEntry.seq.desc())
        .limit(1)
    ).first()
    if entry is None:
        return None
    return control(
        "crypto_shred",
        "The tenant's keys were crypto-shredded, so its ciphertexts cannot be decrypted",
        True,
        {
            "shredded_at": as_utc(entry.at).isoformat(timespec="seconds"),
            "actor": entry.actor,
            "audit_entry": f"{entry.chain}#{entry.seq}",
            "keys_destroyed": entry.details.get("keys_destroyed"),
            "kinds_destroyed": entry.details.get("kinds", []),
            "key_rows_remaining": 0,
        },
    )


# A control that a feature adds to the report, built like `control` from its own tables.
ControlBuilder = Callable[[Session, str], dict[str, Any]]


def build_report(
    session: Session,
    tenant_id: str,
    *,
    now: datetime | None = None,
    feature_controls: Sequence[ControlBuilder] = (),
) -> dict[str, Any]:
    """Run every control for the tenant and return the report as a JSON-ready dict.

    `feature_controls` run after the retention control, for checks on tables of the features
    above this package, which the composition root passes in. For a tenant whose keys were
    crypto-shredded, the controls that need its keys make no sense any more: the report gives
    the shredding evidence and the audit chain instead. When it is the first call of its
    transaction, every control reads one snapshot, so a purge or an append committed
    meanwhile cannot fail a control.
    """
    read_one_snapshot(session)
    now = now or datetime.now(UTC)
    shred = shredded_keys(session, tenant_id)
    if shred is not None:
        controls = [shred, audit_chain(session, tenant_id)]
    else:
        settings = tenant_privacy_settings(session, tenant_id)
        decryption_log = decryption_entries(session, tenant_id)
        controls = [
            encryption_coverage(session, tenant_id),
            key_state(session, tenant_id, now),
            decryptions(decryption_log),
            purpose_limitation(session, tenant_id, decryption_log, now),
            exports(session, tenant_id, settings["k"]),
            retention(session, tenant_id, settings["retention_days"], now),
            *(build(session, tenant_id) for build in feature_controls),
            audit_chain(session, tenant_id),
        ]
    return {
        "tenant_id": tenant_id,
        "generated_at": now.isoformat(timespec="seconds"),
        "passed": all(c["passed"] for c in controls),
        "controls": controls,
    }


def render_markdown(report: dict[str, Any]) -> str:
    """Render a report as Markdown: a summary table, then each control's evidence."""
    overall = "PASS" if report["passed"] else "FAIL"
    lines = [
        f"# Privacy report: {report['tenant_id']}",
        "",
        f"Generated {report['generated_at']}. Overall: **{overall}**.",
        "",
        "| control | result |",
        "|---|---|",
    ]
    for control in report["controls"]:
        lines.append(f"| {control['title']} | {'pass' if control['passed'] else 'FAIL'} |")
    for control in report["controls"]:
        lines += ["", f"## {control['title']}", ""]
        for key, value in control["evidence"].items():
            lines += _evidence_lines(key, value, 0)
    return "\n".join(lines) + "\n"


def _inline(value: Any) -> str:
    """Render one evidence value on one line: a record as `key: value` pairs, text as it is."""
    if isinstance(value, dict):
        return ", ".join(f"{key}: {_inline(item)}" for key, item in value.items()) or "(none)"
    if isinstance(value, list):
        return ", ".join(_inline(item) for item in value) or "(none)"
    return str(value)


def _evidence_lines(key: str, value: Any, depth: int) -> list[str]:
    """Markdown bullets for one evidence entry; lists and records nest one level per depth."""
    indent = "  " * depth
    if isinstance(value, dict) and value:
        lines = [f"{indent}- {key}:"]
        for name, item in value.items():
            lines += _evidence_lines(str(name), item, depth + 1)
        return lines
    if isinstance(value, list):
        if not value:
            return [f"{indent}- {key}: (none)"]
        return [f"{indent}- {key}:"] + [f"{indent}  - {_inline(item)}" for item in value]
    return [f"{indent}- {key}: {_inline(value)}"]
