"""A fault-injecting TCP proxy for the fault tests: sits on 127.0.0.1 between pg2neo and a server (Neo4j's Bolt
port) and can cut every open connection on demand, like a network failure in the middle of a batch.

Also `assert_graph_exact`, the end-of-test check every fault test makes: the whole graph against the PostgreSQL rows.

Place in the data flow: test support only; between the applier and Neo4j.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from types import TracebackType
from typing import Any

import psycopg
from neo4j import Driver
from psycopg import sql

from pg2neo.apply.cypher import q
from pg2neo.mapping.plan import Mapping
from pg2neo.reconcile.counts import expected_counts, graph_counts


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closing = False
        self.accepted = 0
        self.cuts = 0
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self.accepted += 1
                self._sockets |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(src, dst)

    def _drop(self, *socks: socket.socket) -> None:
        with self._lock:
            for sock in socks:
                self._sockets.discard(sock)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._sockets) // 2

    def cut_all(self) -> int:
        """Reset every open connection (both sides); returns how many were cut. New connections still work."""
        with self._lock:
            socks = list(self._sockets)
            self._sockets.clear()
        for sock in socks:
            with contextlib.suppress(OSError):
                # An abortive close (RST), as a dropped network path or a killed middlebox does.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        cut = len(socks) // 2
        self.cuts += cut
        return cut

    def close(self) -> None:
        self._closing = True
        self._listener.close()
        self.cut_all()


def assert_graph_exact(conn: psycopg.Connection[Any], driver: Driver, mapping: Mapping) -> dict[str, int]:
    """The whole graph equals the graph of the PostgreSQL rows: counts per label and type, then per label the set of
    (node key, one property) read from both sides. Returns the expected counts. Nothing lost, nothing extra."""
    expected = expected_counts(conn, mapping)
    assert graph_counts(driver, mapping) == expected
    for node in mapping.nodes:
        prop_column = next(
            (
                c
                for c in node.columns
                if c.name not in node.key_columns and c.type_name in ("text", "bigint", "integer")
            ),
            None,
        )
        schema, name = node.table.split(".", 1)
        select = [sql.SQL("{}::text").format(sql.Identifier(c)) for c in node.key_columns]
        select.append(
            sql.SQL("NULL") if prop_column is None else sql.SQL("{}::text").format(sql.Identifier(prop_column.name))
        )
        pg_rows = conn.execute(
            sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(select), sql.Identifier(schema, name))
        ).fetchall()
        in_pg = {(tuple(r[:-1]), r[-1]) for r in pg_rows}
        keys = ", ".join(f"toString(n[{json.dumps(p)}])" for p in node.key_props)
        prop = "null" if prop_column is None else f"toString(n[{json.dumps(prop_column.prop)}])"
        with driver.session() as session:
            records = session.run(f"MATCH (n:{q(node.label)}) RETURN [{keys}] AS k, {prop} AS p").values()
        in_neo = {(tuple(k), p) for k, p in records}
        assert len(in_neo) == len(records), f"{node.label}: duplicate nodes in Neo4j"
        missing, extra = in_pg - in_neo, in_neo - in_pg
        assert not missing and not extra, f"{node.label}: missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}"
    return expected
