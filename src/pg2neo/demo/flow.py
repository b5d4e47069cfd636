"""`pg2neo demo`: the whole main job on the embedded local stack, start to finish, with a side-by-side table."""

from __future__ import annotations

import importlib.resources
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

from pg2neo.demo.generate import generate, load_schema, row_counts
from pg2neo.demo.workload import live_burst
from pg2neo.devstack.stack import LocalStack
from pg2neo.errors import Pg2NeoError
from pg2neo.logs import redact
from pg2neo.mapping.resolve import load_mapping
from pg2neo.pipeline import Pipeline
from pg2neo.reconcile.counts import expected_counts, graph_counts
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_snapshot
from pg2neo.runtime.status import status_report
from pg2neo.settings import Settings

DEMO_DB = "pg2neo_demo"

EXAMPLE_QUERIES = (
    (
        "Threads with the most messages, and their tenant",
        "MATCH (tn:Tenant)-[:OWNS_THREAD]->(t:Thread)-[:CONTAINS_MESSAGE]->(m:Message) "
        "RETURN tn.name AS tenant, t.title AS thread, count(m) AS messages ORDER BY messages DESC, thread LIMIT 3",
    ),
    (
        "Content most relevant to threads (INCLUDES.relevance_score)",
        "MATCH (t:Thread)-[i:INCLUDES]->(c:ContentItem) "
        "RETURN c.title AS content, count(t) AS threads, round(avg(i.relevance_score), 3) AS avg_relevance "
        "ORDER BY threads DESC, avg_relevance DESC LIMIT 3",
    ),
    (
        "Chunks used as context by messages, with their content item",
        "MATCH (m:Message)-[:USED_CONTEXT]->(ch:ContentChunk)<-[:HAS_CHUNK]-(c:ContentItem) "
        "RETURN c.title AS content, ch.chunk_index AS chunk, count(m) AS used_by ORDER BY used_by DESC LIMIT 3",
    ),
)


def mapping_path() -> Path:
    return Path(str(importlib.resources.files("pg2neo.demo").joinpath("mapping.yaml")))


def run_demo(settings: Settings, console: Console, scale: int, live_operations: int) -> None:
    stack = LocalStack(settings.dev)
    started = time.monotonic()
    timings = stack.up()
    info = stack.info()
    up_in = sum(timings.values())
    console.print(f"[bold]1. local stack up[/] in {up_in:.1f}s: {redact(info.pg_dsn)}  {info.neo4j_uri}")

    with psycopg.connect(info.pg_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DEMO_DB)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DB)))
    dsn = psycopg.conninfo.make_conninfo(info.pg_dsn, dbname=DEMO_DB)
    connections = Connections(dsn, info.neo4j_uri, info.neo4j_user, info.neo4j_password)

    with psycopg.connect(dsn, autocommit=True) as conn, connections.driver() as driver:
        t0 = time.monotonic()
        load_schema(conn)
        generate(conn, scale)
        counts = row_counts(conn)
        console.print(
            f"[bold]2. reference schema loaded[/] with {sum(counts.values()):,} rows in {time.monotonic() - t0:.1f}s"
        )
        table = Table("table", "rows")
        for name, n in counts.items():
            table.add_row(name, f"{n:,}")
        console.print(table)

        with driver.session() as session:  # the demo owns the local graph: start from an empty one
            session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()
        mapping = load_mapping(mapping_path(), conn)
        install.init(conn, driver, mapping)
        console.print(f"[bold]3. pg2neo init[/]: triggers on {len(mapping.tables)} tables, Neo4j constraints")

        with Pipeline(settings, dsn, driver, mapping) as pipeline:
            engine = pipeline.engine()
            t0 = time.monotonic()
            loaded = run_snapshot(engine, Stopper(), lambda table, result: None)
        elapsed = time.monotonic() - t0
        console.print(
            f"[bold]4. pg2neo snapshot[/]: {loaded:,} rows in {elapsed:.1f}s "
            f"({loaded / max(elapsed, 1e-9):,.0f} rows/s)"
        )

        service = _start_service(dsn, connections, settings)
        try:
            t0 = time.monotonic()
            ops = live_burst(conn, live_operations)
            burst = time.monotonic() - t0
            console.print(
                f"[bold]5. pg2neo run[/] is syncing a live burst of {live_operations} writes "
                f"({burst:.1f}s): " + ", ".join(f"{k} {v}" for k, v in ops.items() if v)
            )
            lag = _wait_drained(conn, service)
            console.print(f"   queue drained {lag:.2f}s after the last write")
        finally:
            service.send_signal(signal.SIGTERM)
            service.wait(timeout=60)

        expected = expected_counts(conn, mapping)
        actual = graph_counts(driver, mapping)
        table = Table("label / type", "PostgreSQL", "Neo4j", "match")
        for key in expected:
            ok = expected[key] == actual.get(key)
            table.add_row(key, f"{expected[key]:,}", f"{actual.get(key, 0):,}", "[green]yes[/]" if ok else "[red]NO[/]")
        console.print("[bold]6. PostgreSQL vs Neo4j[/]")
        console.print(table)
        for title, query in EXAMPLE_QUERIES:
            records, _, keys = driver.execute_query(query)
            result = Table(*keys, title=title)
            for record in records:
                result.add_row(*(str(record[k]) for k in keys))
            console.print(result)
            console.print(query, style="dim", markup=False)
        report = status_report(conn)
        console.print(f"dead letters: {report['dead_letters']}; total demo time {time.monotonic() - started:.1f}s")
        if expected != actual:
            raise Pg2NeoError("the graph does not match PostgreSQL after the queue drained (see the table above)")


def _start_service(dsn: str, connections: Connections, settings: Settings) -> subprocess.Popen[bytes]:
    env: dict[str, Any] = {
        **os.environ,
        "PG2NEO_PG_DSN": dsn,
        "PG2NEO_NEO4J__URI": connections.neo4j_uri,
        "PG2NEO_NEO4J__PASSWORD": connections.neo4j_password,
        "PG2NEO_MAPPING": str(mapping_path()),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "pg2neo", "--log-level", "warning", "run"],
        env=env,
        stdin=subprocess.DEVNULL,
    )


def _wait_drained(conn: psycopg.Connection[Any], service: subprocess.Popen[bytes], timeout: float = 300) -> float:
    last_write = time.monotonic()
    deadline = last_write + timeout
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise Pg2NeoError(f"`pg2neo run` exited with code {service.returncode}")
        if status_report(conn)["queue_depth"] == 0:
            return time.monotonic() - last_write
        time.sleep(0.05)
    raise Pg2NeoError(f"the queue did not drain within {timeout:.0f}s")
