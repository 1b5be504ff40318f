"""Nonces come from the OS in blocks and are never shared with a forked child."""

from __future__ import annotations

import os

from privacy.fields import NONCE_BYTES, _nonces, _NonceSource


def test_nonces_differ():
    source = _NonceSource()
    seen = {source.take() for _ in range(10_000)}
    assert len(seen) == 10_000
    assert all(len(n) == NONCE_BYTES for n in seen)


def test_forked_child_draws_fresh_block():
    _nonces.take()  # make sure the parent holds a partly used block
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.write(write_end, _nonces.take())
        os._exit(0)
    os.close(write_end)
    child_nonce = os.read(read_end, NONCE_BYTES)
    os.close(read_end)
    os.waitpid(pid, 0)
    parent_nonce = _nonces.take()
    assert len(child_nonce) == NONCE_BYTES
    assert child_nonce != parent_nonce
