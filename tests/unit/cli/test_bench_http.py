"""The load generators' HTTP client against a small loopback server."""

from __future__ import annotations

import asyncio

import pytest

from hub.cli.bench_http import ConnectionPool, ResponseError, encode_json_post, encode_request


async def serve(handler) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.decode("latin-1").split("\r\n"):
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    return head + await reader.readexactly(length)


def test_encoded_post_carries_body_length_and_headers():
    raw = encode_json_post("/c", {"a": 1}, host="h:1", headers={"X-Key": "k"})
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"POST /c HTTP/1.1"
    assert b"Content-Length: 8" in head
    assert b"X-Key: k" in head
    assert body == b'{"a": 1}'


def test_pool_reuses_connection_and_reads_framings():
    connections = 0

    async def handler(reader, writer):
        nonlocal connections
        connections += 1
        try:
            while True:
                await read_request(reader)
                writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok")
                await read_request(reader)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                )
        except asyncio.IncompleteReadError:
            writer.close()

    async def run():
        server, port = await serve(handler)
        pool = ConnectionPool("127.0.0.1", port)
        request = encode_request("GET", "/", host=f"127.0.0.1:{port}")
        answers = [await pool.request(request) for _ in range(4)]
        pool.close()
        server.close()
        return answers

    answers = asyncio.run(run())
    assert answers == [(201, b"ok"), (200, b"abcde")] * 2
    assert connections == 1


def test_pool_resends_after_idle_close():
    seen = []

    async def handler(reader, writer):
        request = await read_request(reader)
        seen.append(request)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx")
        await writer.drain()
        # Like uvicorn's keep-alive timeout: the server closes the connection once idle.
        writer.close()

    async def run():
        server, port = await serve(handler)
        pool = ConnectionPool("127.0.0.1", port)
        request = encode_request("GET", "/", host=f"127.0.0.1:{port}")
        first = await pool.request(request)
        await asyncio.sleep(0.05)
        second = await pool.request(request)
        pool.close()
        server.close()
        return first, second

    assert asyncio.run(run()) == ((200, b"x"), (200, b"x"))
    assert len(seen) == 2


def test_new_connection_closed_without_answer_is_an_error():
    async def handler(reader, writer):
        await read_request(reader)
        writer.close()

    async def run():
        server, port = await serve(handler)
        pool = ConnectionPool("127.0.0.1", port)
        try:
            await pool.request(encode_request("GET", "/", host="x"))
        finally:
            server.close()

    with pytest.raises(ResponseError):
        asyncio.run(run())
