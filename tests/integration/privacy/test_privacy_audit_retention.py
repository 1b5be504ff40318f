"""The `audit` retention period: the purge cuts a chain's start at a signed anchor, and
verification, comparison with an earlier export and the report accept only that cut."""

from __future__ import annotations

import itertools
import json
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, func, select

import privacy.audit
import privacy.retention
from hub.core.db import unit_of_work
from hub.core.tenancy import SystemContext, TenantContext
from privacy.audit import (
    anchor_message,
    audit,
    checkpoint_chain,
    checkpoint_message,
    public_key_hex,
    signing_key,
)
from privacy.audit_compare import compare_with_earlier
from privacy.audit_verify import export_audit, verify, verify_database
from privacy.models import AuditAnchor, AuditCheckpoint, AuditEntry
from privacy.report import build_report, render_markdown
from privacy.retention import ACTION_AUDIT_PURGE, purge_in_batches, tenant_privacy_settings
from privacy.tasks import run_retention_purge

# Older than the default `audit` period (2555 days) before today.
OLD = datetime(2016, 1, 1, tzinfo=UTC)
# keys.create at onboarding, then these, all at OLD; the anchor lands on the last of them.
OLD_ENTRIES = 9
ANCHOR_SEQ = OLD_ENTRIES + 1
NEW_ENTRIES = 3


def append(engine, tenant, count):
    for n in range(count):
        with unit_of_work(TenantContext(tenant), engine=engine) as session:
            audit(
                session, tenant_id=tenant, actor="cli:test", action="test.event", details={"n": n}
            )


@contextmanager
def clock_at(monkeypatch, start):
    """Stamp audit entries and signatures from `start` on, one second apart."""
    ticks = itertools.count()
    with monkeypatch.context() as patch:
        patch.setattr(privacy.audit, "utcnow", lambda: start + timedelta(seconds=next(ticks)))
        yield


@pytest.fixture
def old_tenant(engine, monkeypatch, request):
    """A tenant onboarded at OLD with a chain of ANCHOR_SEQ old entries (a checkpoint at #5),
    then NEW_ENTRIES entries written now."""
    with clock_at(monkeypatch, OLD):
        tenant = request.getfixturevalue("tenant")
        append(engine, tenant, 4)
        with unit_of_work(SystemContext("test"), engine=engine) as session:
            checkpoint_chain(session, tenant)
        append(engine, tenant, OLD_ENTRIES - 4)
    append(engine, tenant, NEW_ENTRIES)
    return tenant


def entry_hashes(engine, tenant):
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        rows = session.execute(
            select(AuditEntry.seq, AuditEntry.hash).where(AuditEntry.chain == tenant)
        ).all()
    return dict(rows)


def export(engine, tenant, path):
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        checkpoint_chain(session, tenant)
        export_audit(session, path, tenant_id=tenant)
    return path


def database_result(engine, tenant):
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        return verify_database(session, tenant_id=tenant)


def test_purge_deletes_up_to_anchor(engine, old_tenant):
    tenant = old_tenant
    before = entry_hashes(engine, tenant)
    assert len(before) == ANCHOR_SEQ + NEW_ENTRIES

    purged = run_retention_purge(tenant, engine=engine)

    assert purged["deleted:audit_log"] == ANCHOR_SEQ
    after = entry_hashes(engine, tenant)
    assert min(after) == ANCHOR_SEQ + 1
    # The new entries and the retention.audit_purge entry are kept unchanged.
    assert max(after) == ANCHOR_SEQ + NEW_ENTRIES + 1
    assert all(after[seq] == before[seq] for seq in before if seq > ANCHOR_SEQ)
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        anchor = session.get(AuditAnchor, tenant)
        first = session.scalar(
            select(AuditEntry).where(AuditEntry.chain == tenant, AuditEntry.seq == ANCHOR_SEQ + 1)
        )
        purge_entry = session.scalar(
            select(AuditEntry).where(
                AuditEntry.chain == tenant, AuditEntry.action == ACTION_AUDIT_PURGE
            )
        )
        old_checkpoints = session.scalar(
            select(func.count())
            .select_from(AuditCheckpoint)
            .where(AuditCheckpoint.chain == tenant, AuditCheckpoint.seq <= ANCHOR_SEQ)
        )
    assert (anchor.seq, anchor.hash) == (ANCHOR_SEQ, before[ANCHOR_SEQ])
    assert anchor.public_key == public_key_hex()
    assert first.prev_hash == anchor.hash
    assert old_checkpoints == 0
    assert purge_entry.details["from_seq"] == 1
    assert purge_entry.details["to_seq"] == ANCHOR_SEQ
    assert purge_entry.details["entries_deleted"] == ANCHOR_SEQ
    assert purge_entry.details["anchor_seq"] == ANCHOR_SEQ
    assert purge_entry.details["anchor_hash"] == before[ANCHOR_SEQ]

    result = database_result(engine, tenant)
    assert result.ok, result.problems
    assert result.anchors == {tenant: ANCHOR_SEQ}
    assert "deleted:audit_log" not in run_retention_purge(tenant, engine=engine)


def test_purge_keeps_new_chain(engine, tenant):
    append(engine, tenant, 3)
    purged = run_retention_purge(tenant, engine=engine)
    assert "deleted:audit_log" not in purged
    assert min(entry_hashes(engine, tenant)) == 1
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        assert session.get(AuditAnchor, tenant) is None


def test_purge_stops_at_first_new_entry(engine, monkeypatch, request):
    """An old entry after a new one (the clock stepped back) stays, and so does all after it."""
    with clock_at(monkeypatch, OLD):
        tenant = request.getfixturevalue("tenant")
    append(engine, tenant, 1)
    with clock_at(monkeypatch, OLD):
        append(engine, tenant, 2)
    assert run_retention_purge(tenant, engine=engine)["deleted:audit_log"] == 1
    assert min(entry_hashes(engine, tenant)) == 2
    assert database_result(engine, tenant).ok


def test_purge_leaves_hub_chain(engine, old_tenant, monkeypatch):
    with clock_at(monkeypatch, OLD), unit_of_work(SystemContext("test"), engine=engine) as session:
        entry = audit(session, tenant_id=None, actor="system", action="test.hub_event")
        hub_seq = entry.seq
    run_retention_purge(old_tenant, engine=engine)
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        hub_entry = session.scalar(
            select(AuditEntry).where(AuditEntry.chain == "hub", AuditEntry.seq == hub_seq)
        )
        assert session.get(AuditAnchor, "hub") is None
    assert hub_entry is not None


def test_purge_batches_keep_chain_valid(engine, old_tenant, monkeypatch):
    tenant = old_tenant
    monkeypatch.setattr(privacy.retention, "PURGE_BATCH", 4)
    after_commit = []

    @contextmanager
    def transaction():
        with unit_of_work(TenantContext(tenant), engine=engine) as session:
            yield session
        after_commit.append(database_result(engine, tenant).problems)

    with unit_of_work(TenantContext(tenant), engine=engine, write=False) as session:
        days = tenant_privacy_settings(session, tenant)["retention_days"]
    purged = purge_in_batches(transaction, tenant, days, actor="test")

    assert purged["deleted:audit_log"] == ANCHOR_SEQ
    assert all(problems == [] for problems in after_commit), after_commit
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        entries = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.chain == tenant, AuditEntry.action == ACTION_AUDIT_PURGE)
            .order_by(AuditEntry.seq)
        ).all()
    # Batches of four: #1..#4, #5..#8, then #9..#10; each one signed its own anchor.
    assert [(e.details["from_seq"], e.details["to_seq"]) for e in entries] == [
        (1, 4),
        (5, 8),
        (9, 10),
    ]


def test_anchored_export_verifies(engine, old_tenant, tmp_path):
    run_retention_purge(old_tenant, engine=engine)
    path = export(engine, old_tenant, tmp_path / "audit.jsonl")
    result = verify(path, trusted_keys={public_key_hex()})
    assert result.ok, result.problems
    assert result.anchors == {old_tenant: ANCHOR_SEQ}
    assert result.entries == NEW_ENTRIES + 1


def lines_of(path):
    return path.read_text().splitlines()


def line_index(lines, kind):
    return next(i for i, line in enumerate(lines) if json.loads(line)["type"] == kind)


def signed_anchor(record, key):
    message = anchor_message(record["chain"], record["seq"], record["hash"], record["cutoff"])
    record["public_key"] = key.public_key().public_bytes_raw().hex()
    record["signature"] = key.sign(message).hex()
    return record


def remove_anchor(lines):
    del lines[line_index(lines, "anchor")]


def anchor_of_other_key(lines):
    index = line_index(lines, "anchor")
    lines[index] = json.dumps(signed_anchor(json.loads(lines[index]), Ed25519PrivateKey.generate()))


def forged_anchor_signature(lines):
    index = line_index(lines, "anchor")
    record = json.loads(lines[index])
    record["signature"] = "00" * 64
    lines[index] = json.dumps(record)


def checkpoint_signature_as_anchor(lines):
    """A checkpoint signature over the same entry does not pass as an anchor."""
    index = line_index(lines, "anchor")
    record = json.loads(lines[index])
    message = checkpoint_message(record["chain"], record["seq"], record["hash"])
    record["signature"] = signing_key().sign(message).hex()
    lines[index] = json.dumps(record)


def anchor_not_linked(lines):
    """A validly signed anchor over another hash: the first entry does not link to it."""
    index = line_index(lines, "anchor")
    record = json.loads(lines[index])
    record["hash"] = "ab" * 32
    lines[index] = json.dumps(signed_anchor(record, signing_key()))


def anchor_moved_back(lines):
    """A validly signed anchor one entry earlier leaves the entry after it missing."""
    index = line_index(lines, "anchor")
    record = json.loads(lines[index])
    record["seq"] -= 1
    lines[index] = json.dumps(signed_anchor(record, signing_key()))


def first_entry_removed(lines):
    del lines[line_index(lines, "entry")]


CUT_CASES = [
    (remove_anchor, {"deleted"}),
    (anchor_of_other_key, {"unknown_signer", "deleted"}),
    (forged_anchor_signature, {"bad_signature", "deleted"}),
    (checkpoint_signature_as_anchor, {"bad_signature", "deleted"}),
    (anchor_not_linked, {"deleted"}),
    (anchor_moved_back, {"deleted"}),
    (first_entry_removed, {"deleted"}),
]


@pytest.mark.parametrize(("tamper", "kinds"), CUT_CASES, ids=[c[0].__name__ for c in CUT_CASES])
def test_anchored_export_tampering_detected(engine, old_tenant, tmp_path, tamper, kinds):
    run_retention_purge(old_tenant, engine=engine)
    path = export(engine, old_tenant, tmp_path / "audit.jsonl")
    lines = lines_of(path)
    tamper(lines)
    path.write_text("\n".join(lines) + "\n")

    result = verify(path, trusted_keys={public_key_hex()})

    assert kinds <= {p.kind for p in result.problems}, result.problems
    assert result.anchors == {}


def test_cut_without_anchor_is_deleted(engine, old_tenant, tmp_path):
    """Deleting a chain's oldest entries without the purge leaves no anchor to verify."""
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        session.execute(
            delete(AuditEntry).where(AuditEntry.chain == old_tenant, AuditEntry.seq <= 3)
        )
        session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.chain == old_tenant))
    path = export(engine, old_tenant, tmp_path / "audit.jsonl")

    problems = verify(path, trusted_keys={public_key_hex()}).problems

    assert [(p.kind, p.seq) for p in problems] == [("deleted", 4)]
    assert f"entries {old_tenant}#1..#3 are missing" in problems[0].message
    assert [p.kind for p in database_result(engine, old_tenant).problems] == ["deleted"]


@pytest.mark.parametrize(
    ("tamper", "kinds"),
    [("delete_anchor", {"deleted"}), ("move_anchor", {"bad_signature", "deleted"})],
)
def test_database_anchor_tampering_detected(engine, old_tenant, tamper, kinds):
    run_retention_purge(old_tenant, engine=engine)
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        anchors = select(AuditAnchor).where(AuditAnchor.chain == old_tenant)
        if tamper == "delete_anchor":
            session.execute(delete(AuditAnchor).where(AuditAnchor.chain == old_tenant))
        else:
            session.scalar(anchors).seq = ANCHOR_SEQ - 1
    result = database_result(engine, old_tenant)
    assert kinds <= {p.kind for p in result.problems}, result.problems


def test_earlier_export_entries_removed_by_retention(engine, old_tenant, tmp_path):
    earlier = export(engine, old_tenant, tmp_path / "earlier.jsonl")
    run_retention_purge(old_tenant, engine=engine)
    later = export(engine, old_tenant, tmp_path / "later.jsonl")

    comparison = compare_with_earlier(earlier, later, trusted_keys={public_key_hex()})

    assert comparison.problems == []
    assert comparison.removed_by_retention == {old_tenant: list(range(1, ANCHOR_SEQ + 1))}
    assert comparison.removed_count == ANCHOR_SEQ


def test_earlier_export_cut_without_anchor(engine, old_tenant, tmp_path):
    earlier = export(engine, old_tenant, tmp_path / "earlier.jsonl")
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        session.execute(
            delete(AuditEntry).where(AuditEntry.chain == old_tenant, AuditEntry.seq <= 2)
        )
    later = export(engine, old_tenant, tmp_path / "later.jsonl")

    comparison = compare_with_earlier(earlier, later, trusted_keys={public_key_hex()})

    assert [(p.kind, p.seq) for p in comparison.problems] == [("deleted", 1)]
    assert comparison.removed_count == 0


def test_earlier_export_before_anchor_is_deleted(engine, monkeypatch, request, tmp_path):
    """An earlier export that ends before the anchor cannot show that its entries led to it."""
    with clock_at(monkeypatch, OLD):
        tenant = request.getfixturevalue("tenant")
        append(engine, tenant, 2)
        earlier = export(engine, tenant, tmp_path / "earlier.jsonl")
        append(engine, tenant, 3)
    append(engine, tenant, 1)
    run_retention_purge(tenant, engine=engine)
    later = export(engine, tenant, tmp_path / "later.jsonl")

    comparison = compare_with_earlier(earlier, later, trusted_keys={public_key_hex()})

    assert [(p.kind, p.seq) for p in comparison.problems] == [("deleted", 1)]
    assert "has no entry #6 with the hash of the later export's anchor" in (
        comparison.problems[0].message
    )
    assert comparison.removed_count == 0


def report(engine, tenant):
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        return build_report(session, tenant)


def control(result, control_id):
    return next(c for c in result["controls"] if c["id"] == control_id)


def test_report_audit_period_enforced(engine, old_tenant):
    before = control(report(engine, old_tenant), "retention")
    assert not before["passed"]
    assert before["evidence"]["audit_period"]["enforced"] is True
    assert before["evidence"]["audit_period"]["entries_past_period"] == ANCHOR_SEQ
    assert before["evidence"]["audit_period"]["anchor"] is None

    run_retention_purge(old_tenant, engine=engine)
    result = report(engine, old_tenant)

    retention = control(result, "retention")
    assert retention["passed"], retention
    period = retention["evidence"]["audit_period"]
    assert period["entries_past_period"] == 0
    assert period["entries_removed"] == ANCHOR_SEQ
    assert period["anchor"]["seq"] == ANCHOR_SEQ
    assert period["anchor"]["public_key"] == public_key_hex()
    chain = control(result, "audit_chain")
    assert chain["passed"], chain
    assert chain["evidence"]["anchors"] == {old_tenant: ANCHOR_SEQ}
    markdown = render_markdown(result)
    assert f"  - entries_removed: {ANCHOR_SEQ}" in markdown
    assert f"  - {old_tenant}: {ANCHOR_SEQ}" in markdown


def test_export_during_purge_verifies(engine, old_tenant, tmp_path):
    """A purge that commits while an export reads the chain does not make the export fail:
    the export reads its entries, checkpoints and anchor from one snapshot."""
    tenant = old_tenant
    path = tmp_path / "audit.jsonl"
    purged = []
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        checkpoint_chain(session, tenant)

    with unit_of_work(SystemContext("test export"), engine=engine, write=False) as session:
        scalars = session.scalars

        def purge_after_entries(statement, *args, **kwargs):
            result = scalars(statement, *args, **kwargs)
            if not purged:
                purged.append(run_retention_purge(tenant, engine=engine))
            return result

        session.scalars = purge_after_entries
        export_audit(session, path, tenant_id=tenant)

    assert purged[0]["deleted:audit_log"] == ANCHOR_SEQ
    result = verify(path)
    assert result.ok, [vars(problem) for problem in result.problems]
