"""Audit export to JSON Lines and offline verification of an exported file.

The export is one JSON document per line: a header, every entry ordered by chain and sequence
number, the signed checkpoints, then a signed trailer. The trailer names the last entry of every
chain and the entry count, so a file cut short after a checkpoint still fails. `verify` needs
only the file (and optionally the expected signing public key), not the database or any key.

What each problem kind means:

- `edited`: the entry's stored hash does not match its contents.
- `deleted`: sequence numbers jump, so entries are missing; a checkpoint names an entry that
  is not in the file; or a chain ends before the entry the signed trailer names (the file was
  cut short), or the trailer itself is missing.
- `inserted`: a sequence number repeats, or an entry does not link to the one before it.
- `reordered`: an entry's sequence number is lower than the one before it in the file.
- `rewritten`: a checkpoint's signed hash differs from the entry at its sequence number, so
  the chain was rebuilt after signing.
- `bad_signature` / `unknown_signer`: a checkpoint or trailer signature is invalid, or is
  valid under a key other than the expected one.
- `not_an_export`: the file does not start with an audit export header.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.core.clock import isoformat, utcnow
from privacy.audit import (
    GENESIS_HASH,
    checkpoint_message,
    entry_record,
    hash_record,
    public_key_hex,
    signing_key,
)
from privacy.encoding import length_prefixed
from privacy.models import AuditCheckpoint, AuditEntry

EXPORT_FORMAT = "hub-audit-export-v2"


@dataclass
class Problem:
    kind: str
    chain: str
    seq: int | None
    line: int | None
    message: str


@dataclass
class VerificationResult:
    entries: int = 0
    chains: int = 0
    checkpoints: int = 0
    signer_keys: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "chains": self.chains,
            "checkpoints": self.checkpoints,
            "signer_keys": sorted(self.signer_keys),
            "problems": [vars(p) for p in self.problems],
        }


def _checkpoint_record(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    return {
        "type": "checkpoint",
        "chain": checkpoint.chain,
        "seq": checkpoint.seq,
        "hash": checkpoint.hash,
        "signed_at": isoformat(checkpoint.signed_at),
        "public_key": checkpoint.public_key,
        "signature": checkpoint.signature,
    }


def export_audit(session: Session, path: Path, *, tenant_id: str | None = None) -> int:
    """Write the audit log (one tenant's chain, or every chain) to `path`; return entry count."""
    entries = select(AuditEntry).order_by(AuditEntry.chain, AuditEntry.seq)
    checkpoints = select(AuditCheckpoint).order_by(AuditCheckpoint.chain, AuditCheckpoint.seq)
    if tenant_id is not None:
        entries = entries.where(AuditEntry.chain == tenant_id)
        checkpoints = checkpoints.where(AuditCheckpoint.chain == tenant_id)
    count = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        header = {"type": "header", "format": EXPORT_FORMAT, "exported_at": isoformat(utcnow())}
        out.write(json.dumps(header) + "\n")
        heads: dict[str, dict[str, Any]] = {}
        for entry in session.scalars(entries).yield_per(1000):
            record = {"type": "entry", **entry_record(entry)}
            out.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
            heads[entry.chain] = {"seq": entry.seq, "hash": entry.hash}
            count += 1
        for checkpoint in session.scalars(checkpoints):
            out.write(json.dumps(_checkpoint_record(checkpoint)) + "\n")
        out.write(json.dumps(_signed_trailer(heads, count)) + "\n")
    return count


def trailer_message(heads: dict[str, Any], entries: int) -> bytes:
    """Return the bytes a trailer signs: the export format, entry count and every chain head."""
    parts: list[str | int] = [EXPORT_FORMAT, entries]
    for chain in sorted(heads):
        parts += [chain, int(heads[chain]["seq"]), str(heads[chain]["hash"])]
    return length_prefixed("hub-audit-trailer-v1", *parts)


def _signed_trailer(heads: dict[str, dict[str, Any]], entries: int) -> dict[str, Any]:
    key = signing_key()
    return {
        "type": "trailer",
        "entries": entries,
        "chains": heads,
        "public_key": public_key_hex(key),
        "signature": key.sign(trailer_message(heads, entries)).hex(),
    }


def verify_records(
    entries: Iterable[tuple[int | None, dict[str, Any]]],
    checkpoints: Iterable[tuple[int | None, dict[str, Any]]],
    *,
    public_key: str | None = None,
    trailer: tuple[int | None, dict[str, Any]] | None = None,
) -> VerificationResult:
    """Check (line number, record) pairs of entries and checkpoints, and the export's signed
    trailer when one is given; see the module doc."""
    result = VerificationResult()
    entries = list(entries)
    present = {(str(r.get("chain")), int(r.get("seq", 0))) for _, r in entries}
    heads: dict[str, tuple[int, str]] = {}
    hash_at: dict[tuple[str, int], str] = {}

    def problem(kind: str, chain: str, seq: int | None, line: int | None, message: str) -> None:
        result.problems.append(Problem(kind, chain, seq, line, message))

    for line, record in entries:
        result.entries += 1
        chain = str(record.get("chain"))
        seq = int(record.get("seq", 0))
        stored = record.get("hash")
        if hash_record({k: v for k, v in record.items() if k != "type"}) != stored:
            problem("edited", chain, seq, line, f"entry {chain}#{seq} does not match its hash")
        previous_seq, previous_hash = heads.get(chain, (0, GENESIS_HASH))
        if (chain, seq) in hash_at:
            problem("inserted", chain, seq, line, f"entry {chain}#{seq} appears twice")
        elif seq < previous_seq:
            problem(
                "reordered", chain, seq, line, f"entry {chain}#{seq} comes after #{previous_seq}"
            )
        elif seq > previous_seq + 1:
            missing = [n for n in range(previous_seq + 1, seq) if (chain, n) not in present]
            if missing:
                problem(
                    "deleted",
                    chain,
                    seq,
                    line,
                    f"entries {chain}#{missing[0]}..#{missing[-1]} are missing",
                )
            else:
                problem(
                    "reordered",
                    chain,
                    seq,
                    line,
                    f"entry {chain}#{seq} comes before #{previous_seq + 1}",
                )
        elif record.get("prev_hash") != previous_hash:
            problem(
                "inserted",
                chain,
                seq,
                line,
                f"entry {chain}#{seq} does not link to the entry before it "
                "(an entry was inserted or replaced)",
            )
        hash_at.setdefault((chain, seq), str(stored))
        if seq >= previous_seq:
            heads[chain] = (seq, str(stored))
    result.chains = len(heads)

    for line, checkpoint in checkpoints:
        result.checkpoints += 1
        chain = str(checkpoint.get("chain"))
        seq = int(checkpoint.get("seq", 0))
        key_hex = str(checkpoint.get("public_key"))
        result.signer_keys.add(key_hex)
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex))
            message = checkpoint_message(chain, seq, str(checkpoint.get("hash")))
            key.verify(bytes.fromhex(str(checkpoint.get("signature"))), message)
        except (InvalidSignature, ValueError):
            problem(
                "bad_signature", chain, seq, line, f"checkpoint {chain}#{seq} signature is invalid"
            )
            continue
        if public_key is not None and key_hex != public_key:
            problem(
                "unknown_signer", chain, seq, line, f"checkpoint {chain}#{seq} signed by {key_hex}"
            )
        actual = hash_at.get((chain, seq))
        if actual is None:
            problem("deleted", chain, seq, line, f"checkpointed entry {chain}#{seq} is missing")
        elif actual != checkpoint.get("hash"):
            problem(
                "rewritten",
                chain,
                seq,
                line,
                f"entry {chain}#{seq} differs from the signed checkpoint; the chain was rebuilt",
            )
    if trailer is not None:
        _check_trailer(trailer, heads, result, public_key)
    return result


def _check_trailer(
    trailer: tuple[int | None, dict[str, Any]],
    heads: dict[str, tuple[int, str]],
    result: VerificationResult,
    public_key: str | None,
) -> None:
    """Compare the chain heads found in the file with the heads the trailer signed."""
    line, record = trailer
    signed_heads = record.get("chains")
    key_hex = str(record.get("public_key"))
    result.signer_keys.add(key_hex)

    def problem(kind: str, chain: str, seq: int | None, message: str) -> None:
        result.problems.append(Problem(kind, chain, seq, line, message))

    try:
        if not isinstance(signed_heads, dict):
            raise ValueError("trailer has no chain heads")
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex))
        message = trailer_message(signed_heads, int(record.get("entries", -1)))
        key.verify(bytes.fromhex(str(record.get("signature"))), message)
    except (InvalidSignature, ValueError, TypeError, KeyError):
        problem("bad_signature", "*", None, "the export trailer's signature is invalid")
        return
    if public_key is not None and key_hex != public_key:
        problem("unknown_signer", "*", None, f"the export trailer is signed by {key_hex}")

    for chain, head in sorted(signed_heads.items()):
        found = heads.get(chain)
        expected_seq = int(head["seq"])
        if found is None:
            problem("deleted", chain, expected_seq, f"chain {chain} is missing from the export")
        elif found[0] < expected_seq:
            problem(
                "deleted",
                chain,
                found[0] + 1,
                f"chain {chain} ends at #{found[0]} but the export signed #{expected_seq}; "
                "the file was cut short",
            )
        elif found != (expected_seq, str(head["hash"])):
            problem(
                "inserted",
                chain,
                found[0],
                f"chain {chain} ends at #{found[0]}, not at the signed head #{expected_seq}",
            )
    for chain in sorted(set(heads) - set(signed_heads)):
        problem("inserted", chain, None, f"chain {chain} is not in the signed trailer")
    if int(record["entries"]) != result.entries:
        kind = "deleted" if result.entries < int(record["entries"]) else "inserted"
        problem(
            kind,
            "*",
            None,
            f"the export signed {record['entries']} entries but the file has {result.entries}",
        )


def verify(path: Path, *, public_key: str | None = None) -> VerificationResult:
    """Verify an exported audit file offline."""
    entries: list[tuple[int | None, dict[str, Any]]] = []
    checkpoints: list[tuple[int | None, dict[str, Any]]] = []
    trailers: list[tuple[int | None, dict[str, Any]]] = []
    result_problems: list[Problem] = []
    header_seen = False
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                record = None
            if not header_seen:
                if not isinstance(record, dict) or record.get("format") != EXPORT_FORMAT:
                    result = VerificationResult()
                    message = (
                        f"{path} is not an audit export: its first line is not a "
                        f"{EXPORT_FORMAT} header; give a file written by `hub audit export`"
                    )
                    result.problems.append(Problem("not_an_export", "*", None, number, message))
                    return result
                header_seen = True
                continue
            if not isinstance(record, dict):
                result_problems.append(
                    Problem("edited", "?", None, number, f"line {number} is not valid JSON")
                )
                continue
            kind = record.get("type")
            if kind == "entry":
                entries.append((number, record))
            elif kind == "checkpoint":
                checkpoints.append((number, record))
            elif kind == "trailer":
                trailers.append((number, record))
            else:
                result_problems.append(
                    Problem("inserted", "?", None, number, f"line {number} has unknown type")
                )
    if len(trailers) != 1:
        message = (
            "the export has no signed trailer, so its end was cut off"
            if not trailers
            else f"the export has {len(trailers)} trailers; one was added"
        )
        kind = "deleted" if not trailers else "inserted"
        result_problems.append(Problem(kind, "*", None, None, message))
    result = verify_records(
        entries,
        checkpoints,
        public_key=public_key,
        trailer=trailers[-1] if len(trailers) == 1 else None,
    )
    result.problems = result_problems + result.problems
    return result


def verify_database(session: Session, *, tenant_id: str | None = None) -> VerificationResult:
    """Verify the stored chains (one tenant's, or all) the same way as an export."""
    entries = select(AuditEntry).order_by(AuditEntry.chain, AuditEntry.seq)
    checkpoints = select(AuditCheckpoint).order_by(AuditCheckpoint.chain, AuditCheckpoint.seq)
    if tenant_id is not None:
        entries = entries.where(AuditEntry.chain == tenant_id)
        checkpoints = checkpoints.where(AuditCheckpoint.chain == tenant_id)
    return verify_records(
        ((None, entry_record(e)) for e in session.scalars(entries).yield_per(1000)),
        ((None, _checkpoint_record(c)) for c in session.scalars(checkpoints)),
    )
