"""`pg2neo verify --since`: compare only what changed recently, and count stale syncs (the background check's read).

The nodes (and their foreign-key relationships) whose row changed (`updated_at_column`) or whose node was synced
within the window are read from both sides by key and compared item by item with verify's items and comparison.
A stale sync is a row changed more than `stale_after_seconds` after its node's `_pg2neo_synced_at`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
from neo4j import Driver
from psycopg import sql

from pg2neo.apply.core import KeyReader
from pg2neo.apply.cypher import recently_synced_query, synced_at_query
from pg2neo.capture.session import prepare_connection
from pg2neo.mapping.convert import key_from_text
from pg2neo.mapping.plan import Mapping, NodeTable
from pg2neo.reconcile.verify import (
    FETCH_ROWS,
    Drift,
    ScopeReport,
    VerifyReport,
    compare_maps,
    count_collisions,
    fk_item,
    key_texts,
    neo4j_item,
    node_item,
    scope_query,
    scopes_of,
)


def _changed_keys(
    conn: psycopg.Connection[Any], driver: Driver, database: str, node: NodeTable, since_seconds: float
) -> dict[tuple[str, ...], Any]:
    """Key (as text) -> the row's `updated_at_column` (None when only the graph's sync time put it here)."""
    keys: dict[tuple[str, ...], Any] = {}
    if node.updated_at_column is not None:
        key_sql = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in node.key_columns)
        query = sql.SQL(
            "SELECT ARRAY[{}], {} FROM {} WHERE {} >= clock_timestamp() - make_interval(secs => %s)"
        ).format(
            key_sql,
            sql.Identifier(node.updated_at_column),
            sql.Identifier(node.schema, node.name),
            sql.Identifier(node.updated_at_column),
        )
        for row in conn.execute(query, (since_seconds,)):
            keys[tuple(row[0])] = row[1]
    with driver.session(database=database) as session:
        for record in session.run(recently_synced_query(node), s=int(since_seconds)):
            keys.setdefault(key_texts(record["k"]), None)
    return keys


def verify_recent(
    pg_dsn: str,
    driver: Driver,
    mapping: Mapping,
    since_seconds: float,
    stale_after_seconds: float = 60.0,
    database: str = "neo4j",
    samples: int = 5,
    pace: Callable[[], None] | None = None,
) -> VerifyReport:
    """Compare only the nodes (and their foreign-key relationships) whose row changed (`updated_at_column`) or
    whose node was synced within the last `since_seconds`; count stale syncs: rows changed more than
    `stale_after_seconds` after their node's `_pg2neo_synced_at`. `pace` is called after each chunk of keys (the
    background check sleeps there, so that it never takes more than its share of the service's CPU)."""
    started = time.monotonic()
    reader = KeyReader(mapping)
    reports: list[ScopeReport] = []
    drifts: list[Drift] = []
    stale = 0
    stale_samples: list[list[str]] = []
    scopes = scopes_of(mapping)
    with psycopg.connect(pg_dsn, autocommit=True, application_name="pg2neo-verify") as conn:
        prepare_connection(conn)
        for node in mapping.nodes:
            keys = _changed_keys(conn, driver, database, node, since_seconds)
            mine = [s for s in scopes if s.entry is node]
            key_list = list(keys)
            pg_map: list[dict[tuple[str, ...], int]] = [{} for _ in mine]
            neo_map: list[dict[tuple[str, ...], int]] = [{} for _ in mine]
            repeated: list[tuple[str, ...]] = []
            for start in range(0, len(key_list), FETCH_ROWS):
                chunk = key_list[start : start + FETCH_ROWS]
                batch = reader.build([r for r in reader.fetch(conn, node, chunk) if r.row is not None])
                writes = batch.nodes.get(node.table)
                if writes is not None:
                    for u in writes.upserts:
                        ident, h = node_item(u["k"], u["p"])
                        if ident in pg_map[0]:
                            repeated.append(ident)
                            continue
                        pg_map[0][ident] = h
                    for index, links in enumerate(writes.links):
                        for link in links:
                            if link["t"] is not None:
                                ident, h = fk_item(link["k"], link["t"])
                                pg_map[1 + index][ident] = h
                typed = [[key_from_text(c, t) for c, t in zip(node.key_column_objs, k, strict=True)] for k in chunk]
                with driver.session(database=database) as session:
                    for slot, scope in enumerate(mine):
                        for record in session.run(scope_query(scope, among_keys=True), keys=typed):
                            ident, h = neo4j_item(scope, record)
                            neo_map[slot][ident] = h
                    if node.updated_at_column is not None:
                        for record in session.run(synced_at_query(node), keys=typed):
                            changed = keys.get(key_texts(record["k"]))
                            synced = record["synced"]
                            if changed is None or synced is None:
                                continue
                            lag = (changed - synced.to_native()).total_seconds()
                            if lag > stale_after_seconds:
                                stale += 1
                                if len(stale_samples) < samples:
                                    stale_samples.append([node.label, *key_texts(record["k"]), f"{lag:.0f}s"])
                if pace is not None:
                    pace()
            for slot, scope in enumerate(mine):
                report = ScopeReport(scope.name, scope.kind, len(pg_map[slot]), len(neo_map[slot]))
                if slot == 0:
                    count_collisions(report, repeated, samples)
                found = compare_maps(pg_map[slot], neo_map[slot])
                for kind, idents in found.items():
                    report.counts[kind] = len(idents)
                    report.samples[kind] = [list(i) for i in idents[:samples]]
                    drifts.extend(Drift(scope.name, kind, i) for i in idents)
                reports.append(report)
    return VerifyReport(
        reports, drifts, time.monotonic() - started, mode="recent", stale=stale, stale_samples=stale_samples
    )
