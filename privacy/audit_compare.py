"""Comparison of a later audit export with an earlier one of the same chains.

Every entry of the earlier file must still be in the later one with the same hash, so entries
removed from a chain's end between the two exports show up even when the later file verifies
on its own. Entries at or below the later file's retention anchor count as removed by
retention instead, when the earlier file's entry at the anchor's seq has the anchor's hash.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from privacy.audit_verify import (
    Problem,
    _anchor_signature_valid,
    _as_seq,
    _Line,
    _line_kind,
    verify,
)


def _entry_hashes(path: Path) -> dict[tuple[str, int], str]:
    """Map (chain, seq) of every readable entry line of an export to its stored hash."""
    hashes: dict[tuple[str, int], str] = {}
    with path.open(encoding="utf-8", errors="replace") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict) or record.get("type") != "entry":
                continue
            seq = _as_seq(record.get("seq"))
            if seq is not None:
                hashes[(str(record.get("chain")), seq)] = str(record.get("hash"))
    return hashes


def _ranges(numbers: list[int]) -> str:
    """Return sorted numbers as `#3..#5, #9`."""
    spans: list[list[int]] = []
    for number in sorted(numbers):
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ", ".join(f"#{a}" if a == b else f"#{a}..#{b}" for a, b in spans)


def _signed_anchors(path: Path, trusted_keys: Collection[str] | None) -> dict[str, tuple[int, str]]:
    """Map each chain of an export to (seq, hash) of its anchor, for anchors whose signature
    is valid (under a trusted key when `trusted_keys` is given). `verify` reports the rest."""
    lines: list[_Line] = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and _line_kind(record) == "anchor":
                lines.append((number, record))
    anchors: dict[str, tuple[int, str]] = {}
    for _line, anchor in lines:
        seq = _as_seq(anchor.get("seq"))
        key_hex = str(anchor.get("public_key"))
        if seq is None or (trusted_keys is not None and key_hex not in trusted_keys):
            continue
        if _anchor_signature_valid(anchor, seq):
            anchors[str(anchor.get("chain"))] = (seq, str(anchor.get("hash")))
    return anchors


def _range_problems(
    kind: str, seqs_by_chain: dict[str, list[int]], describe: Callable[[str, list[int]], str]
) -> list[Problem]:
    """Return one `kind` problem per chain, at its lowest seq, with the message `describe`
    gives for the chain and its seqs."""
    return [
        Problem(kind, chain, min(seqs), None, describe(chain, seqs))
        for chain, seqs in sorted(seqs_by_chain.items())
    ]


@dataclass
class Comparison:
    """The outcome of checking a later export against an earlier one."""

    problems: list[Problem] = field(default_factory=list)
    # Chain -> seqs of the earlier export that the later one lacks because the retention
    # purge deleted them.
    removed_by_retention: dict[str, list[int]] = field(default_factory=dict)

    @property
    def removed_count(self) -> int:
        return sum(len(seqs) for seqs in self.removed_by_retention.values())


def compare_with_earlier(
    earlier: Path, later: Path, *, trusted_keys: Collection[str] | None = None
) -> Comparison:
    """Check `later` against `earlier`, an export of the same chains made before it: the
    earlier file must verify, and each of its entries must be in the later one with the same
    hash.

    An entry missing from `later` at or below the seq of its chain's signed anchor there was
    removed by retention, not deleted, when `earlier` contains the entry at the anchor's seq
    with the anchor's hash, because the signed anchor then vouches for the entries up to it.
    Otherwise,
    for example when `earlier` ends before the anchor, it counts as deleted.
    """
    earlier_result = verify(earlier, trusted_keys=trusted_keys)
    if not earlier_result.ok:
        return Comparison(
            [
                Problem(
                    "earlier_invalid",
                    "*",
                    None,
                    None,
                    f"the earlier export {earlier} does not verify "
                    f"({len(earlier_result.problems)} problem(s)); run `hub audit verify "
                    f"{earlier}` for them",
                )
            ]
        )
    before = _entry_hashes(earlier)
    after = _entry_hashes(later)
    anchors = _signed_anchors(later, trusted_keys)
    comparison = Comparison()
    missing: dict[str, list[int]] = {}
    unanchored: dict[str, list[int]] = {}
    changed: dict[str, list[int]] = {}
    for (chain, seq), digest in before.items():
        found = after.get((chain, seq))
        anchor = anchors.get(chain)
        if found is None and anchor is not None and seq <= anchor[0]:
            anchor_seq, anchor_hash = anchor
            if before.get((chain, anchor_seq)) == anchor_hash:
                comparison.removed_by_retention.setdefault(chain, []).append(seq)
            else:
                unanchored.setdefault(chain, []).append(seq)
        elif found is None:
            missing.setdefault(chain, []).append(seq)
        elif found != digest:
            changed.setdefault(chain, []).append(seq)
    missing_text = f"of the earlier export {earlier} are missing"
    comparison.problems += _range_problems(
        "deleted", missing, lambda chain, seqs: f"entries {chain} {_ranges(seqs)} {missing_text}"
    )
    comparison.problems += _range_problems(
        "deleted",
        unanchored,
        lambda chain, seqs: (
            f"entries {chain} {_ranges(seqs)} {missing_text}, and the earlier export has no "
            f"entry #{anchors[chain][0]} with the hash of the later export's anchor, so the "
            "anchor does not show they were removed by retention; compare with an earlier "
            "export that reaches the anchor"
        ),
    )
    comparison.problems += _range_problems(
        "rewritten",
        changed,
        lambda chain, seqs: (
            f"entries {chain} {_ranges(seqs)} differ from the earlier export {earlier}"
        ),
    )
    return comparison


def compare_exports(
    earlier: Path, later: Path, *, trusted_keys: Collection[str] | None = None
) -> list[Problem]:
    """Return the problems of `later` against `earlier` (see `compare_with_earlier`). An empty
    list means nothing was removed or changed in between, except by retention."""
    return compare_with_earlier(earlier, later, trusted_keys=trusted_keys).problems
