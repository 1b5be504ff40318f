"""Tracking codes: the alphabet, the length, and every position random."""

from __future__ import annotations

from hub.core.ids import _ALPHABET, tracking_code


def test_tracking_code_positions_cover_alphabet():
    codes = [tracking_code() for _ in range(3000)]

    assert all(len(code) == 10 for code in codes)
    # With 3,000 codes, a position that misses one of 32 characters is a broken generator
    # (chance about 32 * (31/32) ** 3000, far below 1e-30).
    for position in range(10):
        assert {code[position] for code in codes} == set(_ALPHABET)


def test_tracking_code_length():
    assert len(tracking_code(16)) == 16
    assert set(tracking_code(12)) <= set(_ALPHABET)
