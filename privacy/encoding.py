"""Length-prefixed encoding of associated data, shared by every wrap and field ciphertext.

Each part is written as a 4-byte big-endian length followed by its UTF-8 bytes, so no choice of
values can make two different tuples encode to the same bytes (`("ab", "c")` and `("a", "bc")`
differ).
"""

from __future__ import annotations

import struct


def length_prefixed(*parts: str | int | bytes) -> bytes:
    out = bytearray()
    for part in parts:
        if isinstance(part, bytes):
            raw = part
        else:
            raw = str(part).encode("utf-8")
        out += struct.pack(">I", len(raw))
        out += raw
    return bytes(out)
