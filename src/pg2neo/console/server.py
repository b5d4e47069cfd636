"""Serving the console: the standard library's WSGI server, one thread per request (the pages block on
PostgreSQL and Neo4j, so a slow verify must not hold the status page)."""

from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from pg2neo.console.app import ConsoleApp


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _IPv6ThreadingServer(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """The app logs each request as a structured event; the default handler's stderr line (with the query string,
    which may hold the token) is not wanted."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def make_console_server(app: ConsoleApp, host: str, port: int) -> WSGIServer:
    """The server bound to (host, port); port 0 takes a free one (read it back from `server.server_port`)."""
    server_class = _IPv6ThreadingServer if ":" in host else _ThreadingServer
    return make_server(host.strip("[]"), port, app, server_class=server_class, handler_class=_QuietHandler)


def serve_in_thread(app: ConsoleApp, host: str = "127.0.0.1", port: int = 0) -> tuple[WSGIServer, threading.Thread]:
    """Start serving on a background thread (tests, embedding); stop with `server.shutdown()` and `app.close()`."""
    server = make_console_server(app, host, port)
    app.start()
    thread = threading.Thread(target=server.serve_forever, name="pg2neo-console", daemon=True)
    thread.start()
    return server, thread
