"""Audit export to JSON Lines and offline verification of an exported file.

The export is one JSON document per line: a header, every entry ordered by chain and sequence
number, the signed checkpoints, the signed anchors, then a signed trailer. The trailer names
the last entry of every chain and the entry count, so a file cut short after a checkpoint
still fails. `verify` needs only the file (and optionally the expected signing public key),
not the database or any key.

A chain whose oldest entries the retention purge deleted starts right after its anchor: an
Ed25519 signature over (chain, seq, hash, cutoff) under its own domain, made by the purge.
Such a chain verifies when the anchor's signature is valid (under a trusted key, when keys are
given) and its first entry is the anchor's seq + 1 and links to the anchor's hash.

What each problem kind means:

- `edited`: an entry's stored hash does not match its contents, one of its field names or its
  `type` was changed, or its line is not JSON. The entry keeps its place in its chain, found
  from the signatures and its neighbours' links, so the edit is not also reported as an entry
  deleted or inserted there.
- `deleted`: sequence numbers jump, so entries are missing. This applies at a chain's start
  too, unless a valid anchor accounts for them. Also when the first entry does not link to
  the chain's anchor, when a checkpoint names an entry that is not in the file, when a chain
  ends before the entry the signed trailer names (the file was cut short), or when the
  trailer itself is missing.
- `inserted`: a sequence number repeats, or an entry does not link to the one before it.
- `reordered`: an entry's sequence number is lower than the one before it in the file.
- `rewritten`: a checkpoint's signed hash differs from the entry at its sequence number, so
  the chain was rebuilt after signing.
- `bad_signature` / `unknown_signer`: a checkpoint, anchor or trailer signature is invalid, or
  is valid under a key other than the expected one. Such an anchor does not start its chain.
- `not_an_export`: the file does not start with an audit export header.
- `earlier_invalid`: the earlier export given to `privacy.audit_compare` does not verify
  itself.

Two checks look beyond one file. `privacy.audit_compare` checks a later export against an
earlier one: every entry of the earlier file must still be in the later one, unchanged, so entries
removed from a chain's end between the two exports show up even when the later file is
consistent in itself. Entries at or below the later file's anchor count as removed by
retention instead, when the earlier file's entry at the anchor's seq has the anchor's hash.
`verify_database` also compares each stored chain with the highest head a checkpoint signed
for it (`audit_heads`), so a chain whose end was deleted after that checkpoint fails.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.core.clock import isoformat, utcnow
from hub.core.db import read_one_snapshot
from privacy.audit import (
    GENESIS_HASH,
    anchor_cutoff_text,
    anchor_message,
    chain_of,
    checkpoint_message,
    entry_record,
    hash_record,
    public_key_hex,
    signing_key,
)
from privacy.encoding import length_prefixed
from privacy.models import AuditAnchor, AuditCheckpoint, AuditEntry, AuditHead

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
    # Chain -> seq of the signed anchor its entries start after (entries 1..seq removed by
    # the retention purge).
    anchors: dict[str, int] = field(default_factory=dict)
    # Entries of earlier exports that the later one lacks because retention removed them.
    removed_by_retention: int = 0

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
            "anchors": dict(sorted(self.anchors.items())),
            "removed_by_retention": self.removed_by_retention,
            "problems": [vars(p) for p in self.problems],
        }


def _checkpoint_record(checkpoint: AuditCheckpoint | AuditHead | AuditAnchor) -> dict[str, Any]:
    return {
        "type": "checkpoint",
        "chain": checkpoint.chain,
        "seq": checkpoint.seq,
        "hash": checkpoint.hash,
        "signed_at": isoformat(checkpoint.signed_at),
        "public_key": checkpoint.public_key,
        "signature": checkpoint.signature,
    }


def _anchor_record(anchor: AuditAnchor) -> dict[str, Any]:
    """Return an anchor as exported: a checkpoint's fields plus the signed `cutoff`."""
    record = _checkpoint_record(anchor)
    record["type"] = "anchor"
    record["cutoff"] = anchor_cutoff_text(anchor.cutoff)
    return record


def export_audit(session: Session, path: Path, *, tenant_id: str | None = None) -> int:
    """Write the audit log (one tenant's chain, or every chain) to `path`; return entry count.

    Call it first in its transaction, so that its queries read one snapshot: an append or a
    retention purge committed between them would otherwise give a file that fails `verify`.
    """
    read_one_snapshot(session)
    entries = select(AuditEntry).order_by(AuditEntry.chain, AuditEntry.seq)
    checkpoints = select(AuditCheckpoint).order_by(AuditCheckpoint.chain, AuditCheckpoint.seq)
    signed_heads = select(AuditHead).order_by(AuditHead.chain)
    anchors = select(AuditAnchor).order_by(AuditAnchor.chain)
    if tenant_id is not None:
        entries = entries.where(AuditEntry.chain == tenant_id)
        checkpoints = checkpoints.where(AuditCheckpoint.chain == tenant_id)
        signed_heads = signed_heads.where(AuditHead.chain == tenant_id)
        anchors = anchors.where(AuditAnchor.chain == tenant_id)
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
        signed = set()
        for checkpoint in session.scalars(checkpoints):
            out.write(json.dumps(_checkpoint_record(checkpoint)) + "\n")
            signed.add((checkpoint.chain, checkpoint.seq))
        anchor_seqs = {}
        for anchor in session.scalars(anchors):
            out.write(json.dumps(_anchor_record(anchor)) + "\n")
            anchor_seqs[anchor.chain] = anchor.seq
        # The highest head a checkpoint signed outlives a deletion of the chain's end together
        # with its checkpoint rows. Exported as a checkpoint, it makes `verify` report that end
        # as deleted, although the chain and the trailer are consistent in themselves. A head
        # at or below the chain's anchor was removed by the retention purge, so it stays out.
        for head in session.scalars(signed_heads):
            if (head.chain, head.seq) not in signed and head.seq > anchor_seqs.get(head.chain, 0):
                out.write(json.dumps(_checkpoint_record(head)) + "\n")
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


_Line = tuple[int | None, dict[str, Any]]


@dataclass
class _PlacedEntry:
    """An exported entry at its place in a chain.

    `hashes` are the values the next entry of the chain may link to. An edited entry gets its
    stored hash and the hash of its contents, because either may be the true one. An entry line
    that is not JSON has no known hash (None) and no readable fields (`record` is None).
    `seq` is None when the entry's place cannot be determined.
    """

    line: int | None
    chain: str
    seq: int | None
    hashes: frozenset[str] | None
    record: dict[str, Any] | None
    edited: str | None = None


# The fields of an exported entry: those its hash covers, plus the hash itself.
_ENTRY_FIELDS = frozenset(
    {
        "chain",
        "seq",
        "tenant_id",
        "at",
        "actor",
        "action",
        "subject",
        "details",
        "prev_hash",
        "hash",
    }
)


def _restore_field_name(record: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Undo the renaming of one entry field, so that its value still serves to place the entry.

    Returns the repaired record and the unknown name, or the record unchanged and None unless
    exactly one field is missing and exactly one unknown key is present.
    """
    unknown = set(record) - _ENTRY_FIELDS - {"type"}
    lacking = _ENTRY_FIELDS - set(record)
    if len(unknown) != 1 or len(lacking) != 1:
        return record, None
    (renamed,), (field_name,) = unknown, lacking
    restored = {k: v for k, v in record.items() if k != renamed}
    restored[field_name] = record[renamed]
    return restored, renamed


def _as_seq(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _signed_places(checkpoints: list[_Line], trailer: _Line | None) -> dict[str, tuple[str, int]]:
    """Map each hash that a checkpoint or the trailer signed to its (chain, seq)."""
    places: dict[str, tuple[str, int]] = {}
    for _line, checkpoint in checkpoints:
        seq = _as_seq(checkpoint.get("seq"))
        if seq is not None:
            places[str(checkpoint.get("hash"))] = (str(checkpoint.get("chain")), seq)
    heads = trailer[1].get("chains") if trailer is not None else None
    for chain, head in (heads if isinstance(heads, dict) else {}).items():
        seq = _as_seq(head.get("seq")) if isinstance(head, dict) else None
        if seq is not None:
            places[str(head.get("hash"))] = (str(chain), seq)
    return places


def _linked_place(
    record: dict[str, Any] | None,
    hashes: frozenset[str] | None,
    previous: _PlacedEntry | None,
    following: dict[str, Any] | None,
    signed: dict[str, tuple[str, int]],
) -> tuple[str, int] | None:
    """Return the place of an edited entry that a signature or a neighbour's link shows.

    The entry's own `chain` and `seq` may be the edited fields, so they are not used here.
    """
    for digest in hashes or ():
        if digest in signed:
            return signed[digest]
    if following is not None and hashes:
        following_seq = _as_seq(following.get("seq"))
        if following_seq is not None and following_seq > 1 and following.get("prev_hash") in hashes:
            return str(following.get("chain")), following_seq - 1
    if record is not None and previous is not None and previous.seq is not None:
        if previous.hashes and record.get("prev_hash") in previous.hashes:
            return previous.chain, previous.seq + 1
    return None


def _gap_place(
    previous: _PlacedEntry | None,
    following: dict[str, Any] | None,
    signed: dict[str, tuple[str, int]],
) -> tuple[str, int] | None:
    """Return the place of an unreadable entry line from the one-entry gap it leaves: between
    its neighbours, before the second entry of a chain, or at a signed place after the last
    entry read."""
    following_seq = _as_seq(following.get("seq")) if following is not None else None
    following_chain = str(following.get("chain")) if following is not None else None
    if previous is not None and previous.seq is not None:
        if following_chain == previous.chain and following_seq == previous.seq + 2:
            return previous.chain, previous.seq + 1
    if following_seq == 2 and (previous is None or previous.chain != following_chain):
        return str(following_chain), 1
    if previous is not None and previous.seq is not None and following_chain != previous.chain:
        after = (previous.chain, previous.seq + 1)
        if after in signed.values():
            return after
    return None


def _place_entry(
    line: int | None,
    record: dict[str, Any] | None,
    previous: _PlacedEntry | None,
    following: dict[str, Any] | None,
    signed: dict[str, tuple[str, int]],
) -> _PlacedEntry:
    """Place one entry in its chain, with the reason it counts as edited when it does."""
    if record is None:
        place = _gap_place(previous, following, signed)
        chain, seq = place if place is not None else ("?", None)
        return _PlacedEntry(line, chain, seq, None, None, f"line {line} is not valid JSON")

    label = record.get("type", "entry")
    record, renamed = _restore_field_name(record)
    stored = record.get("hash")
    computed = hash_record({k: v for k, v in record.items() if k != "type"})
    claimed_seq = _as_seq(record.get("seq"))
    claimed = (str(record.get("chain")), claimed_seq) if claimed_seq is not None else None
    if computed == stored and label == "entry" and renamed is None and claimed is not None:
        return _PlacedEntry(line, claimed[0], claimed[1], frozenset({computed}), record)

    hashes = frozenset(h for h in (stored, computed) if isinstance(h, str))
    place = _linked_place(record, hashes, previous, following, signed) or claimed
    chain, seq = place if place is not None else ("?", None)
    if renamed is not None:
        reason = f"entry {chain}#{seq} has an unknown field {renamed!r}"
    elif label != "entry":
        reason = f"entry {chain}#{seq} on line {line} has type {label!r} instead of 'entry'"
    else:
        reason = f"entry {chain}#{seq} does not match its hash"
    return _PlacedEntry(line, chain, seq, hashes, record, reason)


def _place_entries(
    entries: list[tuple[int | None, dict[str, Any] | None]], signed: dict[str, tuple[str, int]]
) -> list[_PlacedEntry]:
    placed: list[_PlacedEntry] = []
    previous: _PlacedEntry | None = None
    for index, (line, record) in enumerate(entries):
        following = entries[index + 1][1] if index + 1 < len(entries) else None
        entry = _place_entry(line, record, previous, following, signed)
        placed.append(entry)
        if entry.seq is not None:
            previous = entry
    return placed


def _signature_valid(record: dict[str, Any], message: bytes) -> bool:
    """True when the record's `signature` over `message` verifies under its `public_key`."""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(str(record.get("public_key"))))
        key.verify(bytes.fromhex(str(record.get("signature"))), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _anchor_signature_valid(anchor: dict[str, Any], seq: int) -> bool:
    chain, digest, cutoff = (str(anchor.get(name)) for name in ("chain", "hash", "cutoff"))
    return _signature_valid(anchor, anchor_message(chain, seq, digest, cutoff))


def _valid_anchors(
    anchors: list[_Line],
    placed: list[_PlacedEntry],
    result: VerificationResult,
    trusted_keys: Collection[str] | None,
) -> dict[str, tuple[int, str]]:
    """Return {chain: (seq, hash)} of the anchors that may start their chain, and report the
    others.

    An anchor starts its chain only when its signature is valid under a trusted key, it is
    the chain's only anchor, and every entry of the chain in the file comes after it. A chain
    without a usable anchor must start at #1, so a missing start shows up as `deleted`.
    """
    usable: dict[str, tuple[int, str]] = {}
    seen: dict[str, int] = {}
    lowest: dict[str, int] = {}
    for entry in placed:
        if entry.seq is not None:
            lowest[entry.chain] = min(entry.seq, lowest.get(entry.chain, entry.seq))

    def problem(kind: str, chain: str, seq: int | None, line: int | None, message: str) -> None:
        result.problems.append(Problem(kind, chain, seq, line, message))

    for line, anchor in anchors:
        chain = str(anchor.get("chain"))
        seq = _as_seq(anchor.get("seq"))
        seen[chain] = seen.get(chain, 0) + 1
        if seq is None:
            problem("edited", chain, None, line, f"anchor of chain {chain} has no valid seq")
            continue
        key_hex = str(anchor.get("public_key"))
        result.signer_keys.add(key_hex)
        if not _anchor_signature_valid(anchor, seq):
            problem("bad_signature", chain, seq, line, f"anchor {chain}#{seq} signature is invalid")
            continue
        if trusted_keys is not None and key_hex not in trusted_keys:
            problem("unknown_signer", chain, seq, line, f"anchor {chain}#{seq} signed by {key_hex}")
            continue
        if chain not in lowest:
            problem(
                "deleted",
                chain,
                seq + 1,
                line,
                f"chain {chain} has an anchor at #{seq} but no entries; the "
                "retention.audit_purge entry written after every anchor is missing",
            )
            continue
        if lowest[chain] <= seq:
            problem(
                "inserted",
                chain,
                lowest[chain],
                line,
                f"entry {chain}#{lowest[chain]} is at or below the chain's anchor #{seq}, "
                "which the retention purge deleted",
            )
            continue
        usable[chain] = (seq, str(anchor.get("hash")))
    for chain, count in sorted(seen.items()):
        if count > 1:
            problem(
                "inserted", chain, None, None, f"chain {chain} has {count} anchors; one at most"
            )
            usable.pop(chain, None)
    return usable


def verify_records(
    entries: Iterable[tuple[int | None, dict[str, Any] | None]],
    checkpoints: Iterable[_Line],
    *,
    trusted_keys: Collection[str] | None = None,
    trailer: _Line | None = None,
    anchors: Iterable[_Line] = (),
) -> VerificationResult:
    """Check (line number, record) pairs of entries, checkpoints and anchors, and the export's
    signed trailer when one is given; see the module doc. An entry record of None is a line
    that is not JSON."""
    result = VerificationResult()
    checkpoints = list(checkpoints)
    placed = _place_entries(list(entries), _signed_places(checkpoints, trailer))
    present = {(entry.chain, entry.seq) for entry in placed}
    starts = _valid_anchors(list(anchors), placed, result, trusted_keys)
    result.anchors = {chain: seq for chain, (seq, _hash) in starts.items()}
    heads: dict[str, tuple[int, frozenset[str] | None]] = {}
    hash_at: dict[tuple[str, int], frozenset[str] | None] = {}

    def problem(kind: str, chain: str, seq: int | None, line: int | None, message: str) -> None:
        result.problems.append(Problem(kind, chain, seq, line, message))

    for entry in placed:
        chain, seq, line = entry.chain, entry.seq, entry.line
        if entry.edited is not None:
            problem("edited", chain, seq, line, entry.edited)
        # An unreadable line with no place may have been a checkpoint, so it is not counted.
        if entry.record is not None or seq is not None:
            result.entries += 1
        if seq is None:
            continue
        first_of_chain = chain not in heads
        if first_of_chain and chain in starts:
            anchor_seq, anchor_hash = starts[chain]
            heads[chain] = (anchor_seq, frozenset({anchor_hash}))
            if seq != anchor_seq + 1:
                # The gap after the anchor is reported below, so the anchor starts nothing.
                result.anchors.pop(chain, None)
        previous_seq, previous_hashes = heads.get(chain, (0, frozenset({GENESIS_HASH})))
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
        elif (
            first_of_chain
            and chain in starts
            and entry.edited is None
            and entry.record is not None
            and entry.record.get("prev_hash") not in (previous_hashes or ())
        ):
            # The anchor vouches only for a chain that links to it, so without that link the
            # start of the chain is missing.
            problem(
                "deleted",
                chain,
                seq,
                line,
                f"entry {chain}#{seq} does not link to the chain's anchor #{previous_seq}, so "
                f"entries #1..#{previous_seq} are missing without a signed anchor",
            )
            result.anchors.pop(chain, None)
        elif (
            entry.edited is None
            and entry.record is not None
            and previous_hashes is not None
            and entry.record.get("prev_hash") not in previous_hashes
        ):
            # An edited entry's `prev_hash` may be the edited field, and that is reported.
            problem(
                "inserted",
                chain,
                seq,
                line,
                f"entry {chain}#{seq} does not link to the entry before it "
                "(an entry was inserted or replaced)",
            )
        hash_at.setdefault((chain, seq), entry.hashes)
        if seq >= previous_seq:
            heads[chain] = (seq, entry.hashes)
    result.chains = len(heads)

    for line, checkpoint in checkpoints:
        result.checkpoints += 1
        chain = str(checkpoint.get("chain"))
        seq = _as_seq(checkpoint.get("seq"))
        if seq is None:
            problem("edited", chain, None, line, f"checkpoint of chain {chain} has no valid seq")
            continue
        key_hex = str(checkpoint.get("public_key"))
        result.signer_keys.add(key_hex)
        if not _signature_valid(
            checkpoint, checkpoint_message(chain, seq, str(checkpoint.get("hash")))
        ):
            problem(
                "bad_signature", chain, seq, line, f"checkpoint {chain}#{seq} signature is invalid"
            )
            continue
        if trusted_keys is not None and key_hex not in trusted_keys:
            problem(
                "unknown_signer", chain, seq, line, f"checkpoint {chain}#{seq} signed by {key_hex}"
            )
        if (chain, seq) not in hash_at:
            problem("deleted", chain, seq, line, f"checkpointed entry {chain}#{seq} is missing")
            continue
        actual = hash_at[(chain, seq)]
        if actual is not None and checkpoint.get("hash") not in actual:
            problem(
                "rewritten",
                chain,
                seq,
                line,
                f"entry {chain}#{seq} differs from the signed checkpoint; the chain was rebuilt",
            )
    if trailer is not None:
        _check_trailer(trailer, heads, result, trusted_keys)
    return result


def _check_trailer(
    trailer: _Line,
    heads: dict[str, tuple[int, frozenset[str] | None]],
    result: VerificationResult,
    trusted_keys: Collection[str] | None,
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
    if trusted_keys is not None and key_hex not in trusted_keys:
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
        elif found[0] != expected_seq or (
            found[1] is not None and str(head["hash"]) not in found[1]
        ):
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


# The keys that tell the kinds of export lines apart.
_KIND_KEYS = {
    "entry": _ENTRY_FIELDS,
    "checkpoint": frozenset({"chain", "seq", "hash", "signed_at", "public_key", "signature"}),
    "trailer": frozenset({"entries", "chains", "public_key", "signature"}),
    "anchor": frozenset({"chain", "seq", "hash", "cutoff", "signed_at", "public_key", "signature"}),
}


def _line_kind(record: dict[str, Any]) -> str | None:
    """Return the kind of export line whose keys `record` has most of, by share of its keys.

    The `type` field is not covered by any hash or signature, so an edited `type` must not
    decide how the line is checked. A tie goes to the kind with more keys matched, because an
    anchor has every key of a checkpoint. None means the line has fewer than half the keys of
    every kind.
    """
    matched = {kind: len(keys & record.keys()) for kind, keys in _KIND_KEYS.items()}
    shares = {kind: matched[kind] / len(keys) for kind, keys in _KIND_KEYS.items()}
    kind = max(shares, key=lambda name: (shares[name], matched[name]))
    return kind if shares[kind] > 0.5 else None


def verify(path: Path, *, trusted_keys: Collection[str] | None = None) -> VerificationResult:
    """Verify an exported audit file offline. With `trusted_keys`, a checkpoint or trailer
    signed by any other key is an `unknown_signer` problem."""
    entries: list[tuple[int | None, dict[str, Any] | None]] = []
    checkpoints: list[_Line] = []
    anchors: list[_Line] = []
    trailers: list[_Line] = []
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
                if checkpoints or anchors or trailers:
                    result_problems.append(
                        Problem("edited", "?", None, number, f"line {number} is not valid JSON")
                    )
                else:
                    # Entries come before checkpoints and the trailer, so this was an entry.
                    entries.append((number, None))
                continue
            kind = _line_kind(record)
            if kind == "entry":
                # `verify_records` reports an entry whose `type` differs.
                entries.append((number, record))
                continue
            if kind is not None and record.get("type") != kind:
                message = f"line {number} is a {kind} but has type {record.get('type')!r}"
                result_problems.append(Problem("edited", "?", None, number, message))
            if kind == "checkpoint":
                checkpoints.append((number, record))
            elif kind == "anchor":
                anchors.append((number, record))
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
        trusted_keys=trusted_keys,
        trailer=trailers[-1] if len(trailers) == 1 else None,
        anchors=anchors,
    )
    result.problems = result_problems + result.problems
    return result


def hub_signing_keys(session: Session) -> frozenset[str]:
    """Return the public keys this hub has signed checkpoints with: its current key, and the
    keys that `rotate_root` recorded when it replaced the derived keys.

    The current key comes from the root key, not from the database, so a database writer who
    re-signs a rebuilt chain with a key of their own is not trusted. A `keys.rotate_root`
    entry counts only when a hub-chain checkpoint signed by the current key covers it: the
    entries from the chain's start up to that checkpoint must match their hashes and links.
    The hash chain has no secret, so an entry appended after the last such checkpoint, or
    edited before it, names no trusted key. `rotate_root` signs the hub chain's head right
    after its own entry.
    """
    current = public_key_hex()
    keys = {current}
    covered = _hub_seq_signed_by(session, current)
    if covered == 0:
        return frozenset(keys)
    details = session.scalars(
        select(AuditEntry.details).where(
            AuditEntry.chain == chain_of(None),
            AuditEntry.action == "keys.rotate_root",
            AuditEntry.seq <= covered,
        )
    )
    for detail in details:
        for name in ("audit_public_key", "previous_audit_public_key"):
            value = (detail or {}).get(name)
            if isinstance(value, str):
                keys.add(value.lower())
    return frozenset(keys)


def _hub_seq_signed_by(session: Session, public_key: str) -> int:
    """Return the highest seq of the hub chain that a valid signature under `public_key`
    covers, with every entry up to it matching its hash and linked to the one before, or 0."""
    chain = chain_of(None)
    signed = [
        *session.scalars(
            select(AuditCheckpoint).where(
                AuditCheckpoint.chain == chain, AuditCheckpoint.public_key == public_key
            )
        ),
        *session.scalars(
            select(AuditHead).where(AuditHead.chain == chain, AuditHead.public_key == public_key)
        ),
    ]
    valid = {}
    for row in signed:
        if _signature_valid(_checkpoint_record(row), checkpoint_message(chain, row.seq, row.hash)):
            valid[row.seq] = row.hash
    if not valid:
        return 0

    # The hub chain is never purged, so its walk starts at the first entry.
    top = max(valid)
    covered = 0
    expected_seq, prev_hash = 1, GENESIS_HASH
    entries = (
        select(AuditEntry)
        .where(AuditEntry.chain == chain, AuditEntry.seq <= top)
        .order_by(AuditEntry.seq)
    )
    for entry in session.scalars(entries).yield_per(1000):
        record = entry_record(entry)
        if (
            entry.seq != expected_seq
            or record["prev_hash"] != prev_hash
            or hash_record(record) != entry.hash
        ):
            return covered
        if valid.get(entry.seq) == entry.hash:
            covered = entry.seq
        expected_seq, prev_hash = entry.seq + 1, entry.hash
    return covered


def verify_database(
    session: Session,
    *,
    tenant_id: str | None = None,
    trusted_keys: Collection[str] | None = None,
) -> VerificationResult:
    """Verify the stored chains (one tenant's, or all) the same way as an export. With
    `trusted_keys` (see `hub_signing_keys`), a signature under any other key is a problem.
    Like `export_audit`, it reads one snapshot when it is first in its transaction."""
    read_one_snapshot(session)
    entries = select(AuditEntry).order_by(AuditEntry.chain, AuditEntry.seq)
    checkpoints = select(AuditCheckpoint).order_by(AuditCheckpoint.chain, AuditCheckpoint.seq)
    anchors = select(AuditAnchor).order_by(AuditAnchor.chain)
    if tenant_id is not None:
        entries = entries.where(AuditEntry.chain == tenant_id)
        checkpoints = checkpoints.where(AuditCheckpoint.chain == tenant_id)
        anchors = anchors.where(AuditAnchor.chain == tenant_id)
    result = verify_records(
        ((None, entry_record(e)) for e in session.scalars(entries).yield_per(1000)),
        ((None, _checkpoint_record(c)) for c in session.scalars(checkpoints)),
        anchors=[(None, _anchor_record(a)) for a in session.scalars(anchors)],
        trusted_keys=trusted_keys,
    )
    heads = select(AuditHead).order_by(AuditHead.chain)
    if tenant_id is not None:
        heads = heads.where(AuditHead.chain == tenant_id)
    for head in session.scalars(heads):
        if trusted_keys is not None and head.public_key.lower() not in trusted_keys:
            result.problems.append(
                Problem(
                    "unknown_signer",
                    head.chain,
                    head.seq,
                    None,
                    f"the signed head {head.chain}#{head.seq} is signed by key "
                    f"{head.public_key}, which is not one of this hub's signing keys",
                )
            )
            continue
        problem = _head_problem(session, head)
        if problem is not None:
            result.problems.append(problem)
    return result


def _head_problem(session: Session, head: AuditHead) -> Problem | None:
    """Return the problem when the chain no longer reaches the highest head a checkpoint
    signed for it, or when that head or its checkpoint was tampered with. Else return None."""
    chain, seq = head.chain, head.seq
    signed = f"#{seq}, signed on {isoformat(head.signed_at)}"
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(head.public_key))
        key.verify(bytes.fromhex(head.signature), checkpoint_message(chain, seq, head.hash))
    except (InvalidSignature, ValueError):
        return Problem(
            "bad_signature", chain, seq, None, f"the signed head {chain}{signed} is invalid"
        )
    anchor = session.get(AuditAnchor, chain)
    if anchor is not None and seq <= anchor.seq:
        # The retention purge deleted the head's entry and checkpoint. `verify_records` checks
        # the anchor's signature and that the chain links to it.
        if seq == anchor.seq and head.hash != anchor.hash:
            return Problem(
                "rewritten",
                chain,
                seq,
                None,
                f"the chain's anchor #{seq} differs from the head signed as {signed}",
            )
        return None
    stored = session.scalar(
        select(AuditEntry.hash).where(AuditEntry.chain == chain, AuditEntry.seq == seq)
    )
    if stored is None:
        last = session.scalar(select(func.max(AuditEntry.seq)).where(AuditEntry.chain == chain))
        return Problem(
            "deleted",
            chain,
            seq,
            None,
            f"chain {chain} ends at #{last or 0} but reached {signed}; entries were deleted "
            "from its end",
        )
    if stored != head.hash:
        return Problem(
            "rewritten",
            chain,
            seq,
            None,
            f"entry {chain}#{seq} differs from the head signed as {signed}; entries were "
            "deleted from the chain's end and others written in their place",
        )
    checkpoint = session.scalar(
        select(AuditCheckpoint.id).where(AuditCheckpoint.chain == chain, AuditCheckpoint.seq == seq)
    )
    if checkpoint is None:
        return Problem(
            "deleted",
            chain,
            seq,
            None,
            f"the checkpoint of the signed head {chain}{signed} is missing",
        )
    return None
