"""Offline verification of an audit export catches each kind of tampering and names it."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import delete

from hub.core.db import unit_of_work
from hub.core.tenancy import SystemContext, TenantContext
from privacy.audit import audit, checkpoint_chain, hash_record, public_key_hex
from privacy.audit_verify import export_audit, verify, verify_database
from privacy.models import AuditCheckpoint, AuditEntry, AuditHead


def exported(engine, tenant, tmp_path, entries=6):
    for i in range(entries):
        with unit_of_work(TenantContext(tenant), engine=engine) as session:
            audit(
                session, tenant_id=tenant, actor="cli:test", action="test.event", details={"n": i}
            )
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        checkpoint_chain(session, tenant)
        path = tmp_path / "audit.jsonl"
        export_audit(session, path, tenant_id=tenant)
    return path


def lines_of(path):
    return path.read_text().splitlines()


def entry_lines(lines):
    return [i for i, line in enumerate(lines) if json.loads(line)["type"] == "entry"]


def edit_detail(lines):
    index = entry_lines(lines)[2]
    record = json.loads(lines[index])
    record["details"]["n"] = 99
    lines[index] = json.dumps(record)


def edit_and_rehash(lines):
    index = entry_lines(lines)[2]
    record = json.loads(lines[index])
    record["actor"] = "someone-else"
    record["hash"] = hash_record({k: v for k, v in record.items() if k != "type"})
    lines[index] = json.dumps(record)


def delete_middle(lines):
    del lines[entry_lines(lines)[3]]


def delete_tail(lines):
    del lines[entry_lines(lines)[-1]]


def insert_copy(lines):
    index = entry_lines(lines)[2]
    lines.insert(index + 1, lines[index])


def swap_two(lines):
    a, b = entry_lines(lines)[2:4]
    lines[a], lines[b] = lines[b], lines[a]


def forge_signature(lines):
    index = next(i for i, line in enumerate(lines) if json.loads(line)["type"] == "checkpoint")
    record = json.loads(lines[index])
    record["signature"] = "00" * 64
    lines[index] = json.dumps(record)


def garble_checkpoint_seq(lines):
    index = lines_of_type(lines, "checkpoint")[0]
    record = json.loads(lines[index])
    record["seq"] = "abc"
    lines[index] = json.dumps(record)


def rebuild_chain(lines):
    """Rewrite an early entry and re-link every later one: only the checkpoint can tell."""
    indexes = entry_lines(lines)
    previous_hash = None
    for position, index in enumerate(indexes):
        record = json.loads(lines[index])
        if position == 1:
            record["actor"] = "forger"
        if previous_hash is not None:
            record["prev_hash"] = previous_hash
        record["hash"] = hash_record({k: v for k, v in record.items() if k != "type"})
        previous_hash = record["hash"]
        lines[index] = json.dumps(record)


def lines_of_type(lines, kind):
    return [i for i, line in enumerate(lines) if json.loads(line)["type"] == kind]


def delete_tail_and_checkpoint(lines):
    """Cut the last entry and the checkpoint that signed it: an older checkpoint still fits."""
    for index in sorted(
        [entry_lines(lines)[-1], lines_of_type(lines, "checkpoint")[-1]], reverse=True
    ):
        del lines[index]


def delete_trailer(lines):
    del lines[lines_of_type(lines, "trailer")[0]]


def delete_whole_chain(lines):
    for index in sorted(entry_lines(lines) + lines_of_type(lines, "checkpoint"), reverse=True):
        del lines[index]


CASES = [
    (edit_detail, "edited"),
    (edit_and_rehash, "inserted"),
    (delete_middle, "deleted"),
    (delete_tail, "deleted"),
    (insert_copy, "inserted"),
    (swap_two, "reordered"),
    (forge_signature, "bad_signature"),
    (garble_checkpoint_seq, "edited"),
    (rebuild_chain, "rewritten"),
    (delete_tail_and_checkpoint, "deleted"),
    (delete_trailer, "deleted"),
    (delete_whole_chain, "deleted"),
]


def test_untouched_export_verifies(engine, tenant, tmp_path):
    path = exported(engine, tenant, tmp_path)
    result = verify(path, trusted_keys={public_key_hex()})
    assert result.ok, result.problems
    assert result.entries == 7
    assert result.checkpoints == 1


@pytest.mark.parametrize(("tamper", "kind"), CASES, ids=[c[0].__name__ for c in CASES])
def test_tampering_detected(engine, tenant, tmp_path, tamper, kind):
    path = exported(engine, tenant, tmp_path)
    lines = lines_of(path)
    tamper(lines)
    path.write_text("\n".join(lines) + "\n")
    result = verify(path)
    assert not result.ok
    assert kind in {p.kind for p in result.problems}, result.problems


def changed(value):
    """Return `value` with one character or number changed, as a one-byte edit would."""
    if isinstance(value, bool) or value is None:
        return "x"
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value[:-1] + ("x" if not value.endswith("x") else "y")
    if isinstance(value, list):
        return [changed(value[0]), *value[1:]]
    first = next(iter(value))
    return {**value, first: changed(value[first])}


def entry_edits(fields):
    """Return (name, function of the line's text) for each in-place change of one entry."""

    def field_edit(name):
        def edit(text):
            record = json.loads(text)
            record[name] = changed(record[name])
            return json.dumps(record)

        return edit

    edits = [(name, field_edit(name)) for name in fields]
    edits.append(("renamed hash", lambda text: text.replace('"hash":', '"hasx":', 1)))
    edits.append(("not JSON", lambda text: "x" + text[1:]))
    return edits


@pytest.mark.parametrize("position", [0, 3, -1], ids=["first", "middle", "last"])
def test_entry_edit_reported_in_place(engine, tenant, tmp_path, position):
    path = exported(engine, tenant, tmp_path)
    lines = lines_of(path)
    index = entry_lines(lines)[position]
    line_number = index + 1

    edits = entry_edits(sorted(json.loads(lines[index])))
    assert "type" in dict(edits)

    reports = {}
    for name, edit in edits:
        tampered = list(lines)
        tampered[index] = edit(lines[index])
        path.write_text("\n".join(tampered) + "\n")
        reports[name] = [
            (p.kind, p.line) for p in verify(path, trusted_keys={public_key_hex()}).problems
        ]

    assert reports == {name: [("edited", line_number)] for name, _edit in edits}


def test_file_that_is_not_an_export(tmp_path):
    path = tmp_path / "manifest.yaml"
    path.write_text("id: boston\nname: Boston\n")
    result = verify(path)
    assert [p.kind for p in result.problems] == ["not_an_export"]


def test_unknown_signer_detected(engine, tenant, tmp_path):
    path = exported(engine, tenant, tmp_path)
    result = verify(path, trusted_keys={"11" * 32})
    assert {p.kind for p in result.problems} == {"unknown_signer"}


def test_database_chain_verifies(engine, tenant, tmp_path):
    exported(engine, tenant, tmp_path)
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        assert verify_database(session, tenant_id=tenant).ok


def signed_head(engine, tenant):
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        return session.get(AuditHead, tenant).seq


def delete_entries(engine, tenant, from_seq, *, checkpoint_too=False):
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        session.execute(
            delete(AuditEntry).where(AuditEntry.chain == tenant, AuditEntry.seq >= from_seq)
        )
        if checkpoint_too:
            session.execute(
                delete(AuditCheckpoint).where(
                    AuditCheckpoint.chain == tenant, AuditCheckpoint.seq >= from_seq
                )
            )


@pytest.mark.parametrize("checkpoint_too", [False, True])
def test_database_detects_chain_behind_signed_head(engine, tenant, tmp_path, checkpoint_too):
    """The signed head outlives a deletion of the chain's end and of its checkpoint."""
    exported(engine, tenant, tmp_path, entries=6)
    head = signed_head(engine, tenant)
    delete_entries(engine, tenant, head - 1, checkpoint_too=checkpoint_too)
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        problems = verify_database(session, tenant_id=tenant).problems
    assert problems[-1].kind == "deleted"
    assert f"chain {tenant} ends at #{head - 2} but reached #{head}" in problems[-1].message
    # Without the checkpoint row, the signed head is the only evidence left.
    assert len(problems) == (1 if checkpoint_too else 2)


def test_database_detects_replaced_end(engine, tenant, tmp_path):
    exported(engine, tenant, tmp_path, entries=6)
    head = signed_head(engine, tenant)
    delete_entries(engine, tenant, head - 1, checkpoint_too=True)
    with unit_of_work(TenantContext(tenant), engine=engine) as session:
        for _ in range(3):
            audit(session, tenant_id=tenant, actor="cli:test", action="test.event")
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        problems = verify_database(session, tenant_id=tenant).problems
    assert [(p.kind, p.seq) for p in problems] == [("rewritten", head)]


def test_later_export_compared_with_earlier(engine, tenant, tmp_path):
    """A later export that is consistent in itself but lost the earlier export's newest
    entries fails against the earlier one; an export that only grew passes."""
    from privacy.audit_compare import compare_exports

    earlier = exported(engine, tenant, tmp_path / "1", entries=6)
    grown = exported(engine, tenant, tmp_path / "2", entries=2)
    assert compare_exports(earlier, grown, trusted_keys={public_key_hex()}) == []

    head = signed_head(engine, tenant)
    delete_entries(engine, tenant, head - 1, checkpoint_too=True)
    with unit_of_work(SystemContext("test"), engine=engine) as session:
        session.execute(delete(AuditHead))
    shrunk = exported(engine, tenant, tmp_path / "3", entries=0)
    assert verify(shrunk, trusted_keys={public_key_hex()}).ok
    problems = compare_exports(grown, shrunk, trusted_keys={public_key_hex()})
    assert [(p.kind, p.chain, p.seq) for p in problems] == [("deleted", tenant, head - 1)]
    assert f"entries {tenant} #{head - 1}..#{head} of the earlier export" in problems[0].message


def test_export_after_tail_deletion_fails(engine, tenant, tmp_path):
    """An export made after the chain's end and its checkpoint were deleted carries the
    highest signed head, so the file alone fails to verify."""
    exported(engine, tenant, tmp_path / "1", entries=6)
    head = signed_head(engine, tenant)
    delete_entries(engine, tenant, head - 1, checkpoint_too=True)
    later = exported(engine, tenant, tmp_path / "2", entries=0)
    problems = verify(later, trusted_keys={public_key_hex()}).problems
    assert [(p.kind, p.chain, p.seq) for p in problems] == [("deleted", tenant, head)]
    assert f"checkpointed entry {tenant}#{head} is missing" in problems[0].message
