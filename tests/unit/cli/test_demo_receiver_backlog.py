"""The demo's loopback receivers queue a burst of connections instead of dropping them."""

from __future__ import annotations

import socket
from http.server import BaseHTTPRequestHandler

from hub.cli.demo.receiver import LoopbackHTTPServer

BURST = 60


def test_receiver_queues_connection_burst():
    # The server never accepts here, so every connection has to wait in the listen backlog.
    # With socketserver's default backlog of 5 the kernel drops the rest of the burst, and
    # their connects time out.
    server = LoopbackHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    clients = []
    try:
        for _ in range(BURST):
            clients.append(socket.create_connection(server.server_address, timeout=0.5))
        assert len(clients) == BURST
    finally:
        for client in clients:
            client.close()
        server.server_close()
