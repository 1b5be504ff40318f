"""Comparison of a later audit export with an earlier one of the same chains.

Every entry of the earlier file must still be in the later one with the same hash, so entries
removed from a chain's end between the two exports show up even when the later file verifies
on its own.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

from privacy.audit_verify import Problem, _as_seq, verify


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


def compare_exports(
    earlier: Path, later: Path, *, trusted_keys: Collection[str] | None = None
) -> list[Problem]:
    """Return the problems of `later` against `earlier`, an export of the same chains made
    before it: the earlier file must verify, and each of its entries must be in the later one
    with the same hash. An empty list means nothing was removed or changed in between."""
    earlier_result = verify(earlier, trusted_keys=trusted_keys)
    if not earlier_result.ok:
        return [
            Problem(
                "earlier_invalid",
                "*",
                None,
                None,
                f"the earlier export {earlier} does not verify ({len(earlier_result.problems)} "
                f"problem(s)); run `hub audit verify {earlier}` for them",
            )
        ]
    before = _entry_hashes(earlier)
    after = _entry_hashes(later)
    missing: dict[str, list[int]] = {}
    changed: dict[str, list[int]] = {}
    for (chain, seq), digest in before.items():
        found = after.get((chain, seq))
        if found is None:
            missing.setdefault(chain, []).append(seq)
        elif found != digest:
            changed.setdefault(chain, []).append(seq)
    problems = [
        Problem(
            "deleted",
            chain,
            min(seqs),
            None,
            f"entries {chain} {_ranges(seqs)} of the earlier export {earlier} are missing",
        )
        for chain, seqs in sorted(missing.items())
    ]
    problems += [
        Problem(
            "rewritten",
            chain,
            min(seqs),
            None,
            f"entries {chain} {_ranges(seqs)} differ from the earlier export {earlier}",
        )
        for chain, seqs in sorted(changed.items())
    ]
    return problems
