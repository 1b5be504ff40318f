"""A minimal HTTP/1.1 client over persistent loopback connections, for the load generators.

The generator runs on the same cores as the server under test, so its own CPU time per request
shows up in the server's latency figures. This client keeps that time small: it sends requests
encoded once in advance and reads `Content-Length` or chunked responses, and nothing else. It
follows no redirects and supports no cookies, TLS or proxies.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass


class ResponseError(Exception):
    """The server closed the connection or sent a response this client cannot read."""


def encode_request(
    method: str,
    path: str,
    *,
    host: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> bytes:
    """Return the bytes of one HTTP/1.1 request that keeps its connection open."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def encode_json_post(
    path: str, payload: object, *, host: str, headers: dict[str, str] | None = None
) -> bytes:
    """Return the bytes of a POST whose body is `payload` as JSON."""
    return encode_request(
        "POST",
        path,
        host=host,
        body=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send one request; return the status, the body and whether the connection stays."""
        self.writer.write(request)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise ResponseError("the server closed the connection before responding") from exc
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise ResponseError(f"invalid status line {lines[0]!r}") from exc
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if fields.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked()
        else:
            body = await self.reader.readexactly(int(fields.get("content-length", "0")))
        return status, body, fields.get("connection", "").lower() != "close"

    async def _chunked(self) -> bytes:
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        self.writer.close()


class ConnectionPool:
    """Persistent connections to one host and port. A request takes an idle connection or
    opens a new one, so the number of open connections follows the requests in flight."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._idle: list[_Connection] = []

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send the encoded request `raw`; return the status and the body.

        A connection that the server closed while it was idle (uvicorn closes them after five
        seconds) fails before any response, and the request is then sent once more on a new one.
        """
        while self._idle:
            connection = self._idle.pop()
            try:
                return await self._exchange(connection, raw)
            except (ResponseError, ConnectionResetError, BrokenPipeError):
                continue
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return await self._exchange(_Connection(reader, writer), raw)

    async def _exchange(self, connection: _Connection, raw: bytes) -> tuple[int, bytes]:
        try:
            status, body, keep = await connection.exchange(raw)
        except BaseException:
            connection.close()
            raise
        if keep:
            self._idle.append(connection)
        else:
            connection.close()
        return status, body

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
