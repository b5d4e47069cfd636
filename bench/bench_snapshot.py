"""Benchmark 1, snapshot throughput: pg2neo `run_snapshot` against three other ways of loading the same rows.

Data flow measured: PostgreSQL rows (reference schema, `generate(scale)`) -> Neo4j nodes and relationships.
- pg2neo: `run_snapshot` end to end (PostgreSQL keyset pages, mapping, MERGE with version guard, FK and join
  relationships, progress rows, audit), constraints present.
- naive: one Neo4j transaction per row, the same MERGE statements (pg2neo's own Cypher with one row), on a sample
  of rows taken from every table in proportion; the rate is extrapolated to the whole data set.
- APOC route: `apoc.periodic.iterate` running the same MERGE statements, the rows handed over as parameters
  (`apoc.load.jdbc` lives in APOC extended, not in APOC core, so Neo4j cannot read PostgreSQL itself here).
- ceiling: a bare `UNWIND $rows CREATE` of the same rows (relationships: endpoints MATCHed by their unique key,
  then CREATE), no PostgreSQL read, no MERGE, no mapping.
- bulk: `pg2neo snapshot --bulk` end to end (`runtime.bulk.bulk_load`): one exported PostgreSQL snapshot read by
  parallel `COPY`, mapped to import CSV, Neo4j stopped, `neo4j-admin database import full`, Neo4j started,
  constraints created, the queue handed off. Charged for everything, the Neo4j restart included.
The rows for naive, APOC and ceiling are read and mapped by pg2neo's reader and BatchBuilder before the clock
starts, so those three routes are not charged for reading PostgreSQL: the comparison favours them. APOC and the
ceiling share one set of pre-built batches, built once before the first round and kept (frozen out of the garbage
collector's reach, so that collections never land inside a timed run) until the last.
Between runs the graph store is replaced by an empty one (Neo4j restarted, constraints created again: seconds,
where DETACH DELETE of a million nodes took minutes), so every route starts on an empty store and a fresh JVM;
quick mode DETACH DELETEs its small graph instead, which is faster than a restart.
Naive runs first, pg2neo last, so the graph is left loaded for the memory benchmark.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from neo4j import Driver, ManagedTransaction

from bench.common import STATE_DIR, Bench, chart_path, load, log, median, pipeline, wipe_graph, write_result
from pg2neo.apply.batch import BatchBuilder, GraphBatch
from pg2neo.apply.cypher import epoch_sets, join_statements, node_statements, q
from pg2neo.apply.reader import page_query
from pg2neo.apply.writer import GraphWriter, epoch_rows
from pg2neo.capture.session import prepare_connection
from pg2neo.demo.flow import mapping_path
from pg2neo.demo.generate import generate, load_schema, row_counts
from pg2neo.mapping.plan import JoinTable, Mapping, NodeTable
from pg2neo.mapping.resolve import load_mapping
from pg2neo.reconcile.counts import graph_counts
from pg2neo.runtime import install
from pg2neo.runtime.bulk import bulk_load
from pg2neo.runtime.service import Stopper, run_snapshot

DB = "bench_snapshot"
PAGE = 5000
# Rows per apoc.periodic.iterate call, one inner batch: APOC hands its `params` map (which carries the rows) to
# every inner transaction, which converts all of it again, so a call with 10 batches' rows ran ~5x slower.
APOC_CHUNK = PAGE
STATE_BULK = STATE_DIR / "bulk"  # the bulk route's CSV files, removed after each run
NAIVE_WARMUP = 5  # rows per table written by the naive route before its clock starts


def reset_graph(bench: Bench, driver: Driver, mapping: Mapping) -> Driver:
    """An empty graph with pg2neo's constraints: a fresh store (seconds at 1M nodes, where DETACH DELETE takes
    minutes); returns the new driver. Quick mode's few thousand nodes are deleted instead: faster than a restart."""
    if bench.quick:
        wipe_graph(driver)
        return driver
    driver.close()
    bench.empty_graph()
    driver = bench.driver()
    GraphWriter(driver, mapping).ensure_schema()
    return driver


def pages(conn: psycopg.Connection[Any], mapping: Mapping, entry: NodeTable | JoinTable) -> Iterator[GraphBatch]:
    builder = BatchBuilder(mapping)
    last: list[Any] | None = None
    while True:
        query = page_query(mapping, entry, after=last is not None)
        rows = conn.execute(query, [*(last or []), PAGE]).fetchall()
        if not rows:
            return
        batch = builder.new_batch()
        builder.add_rows(batch, entry, rows)
        yield batch
        last = list(rows[-1][0])
        if len(rows) < PAGE:
            return


Prebuilt = dict[str, list[GraphBatch]]


def prebuild(dsn: str, mapping: Mapping) -> Prebuilt:
    """Every table's rows read and mapped into pg2neo's batches, once, for the routes that get them for free."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        prepare_connection(conn)
        built = {entry.table: list(pages(conn, mapping, entry)) for entry in mapping.entries}
    gc.collect()
    gc.freeze()
    return built


# -- the ceiling: CREATE only ----------------------------------------------------------------------------------


def _key(props: tuple[str, ...], source: str) -> str:
    return "{" + ", ".join(f"{q(p)}: {source}[{i}]" for i, p in enumerate(props)) + "}"


def ceiling_node(table: NodeTable) -> str:
    labels = "".join(f":{q(label)}" for label in table.labels)
    return f"UNWIND $rows AS r CREATE (n{labels}) SET n = r.p{epoch_sets(table.epoch_props)}"


def ceiling_links(table: NodeTable) -> list[str]:
    out = []
    for rel in table.fk_rels:
        arrow = f"(n)-[:{q(rel.type)}]->(x)" if rel.direction == "out" else f"(n)<-[:{q(rel.type)}]-(x)"
        out.append(
            f"UNWIND $rows AS r WITH r WHERE r.t IS NOT NULL "
            f"MATCH (n:{q(table.label)} {_key(table.key_props, 'r.k')}) "
            f"MATCH (x:{q(rel.target_label)} {_key(rel.target_key_props, 'r.t')}) CREATE {arrow}"
        )
    return out


def ceiling_join(table: JoinTable) -> str:
    return (
        f"UNWIND $rows AS r MATCH (a:{q(table.start.label)} {_key(table.start.key_props, 'r.a')}) "
        f"MATCH (b:{q(table.end.label)} {_key(table.end.key_props, 'r.b')}) "
        f"CREATE (a)-[rel:{q(table.type)}]->(b) SET rel = r.p"
    )


def _run_one(tx: ManagedTransaction, statement: str, rows: list[dict[str, Any]]) -> None:
    tx.run(statement, rows=rows).consume()


def _run_many(tx: ManagedTransaction, statements: list[str], rows_per: list[list[dict[str, Any]]]) -> None:
    for statement, rows in zip(statements, rows_per, strict=True):
        if rows:
            tx.run(statement, rows=rows).consume()


def run_ceiling(built: Prebuilt, mapping: Mapping, driver: Driver) -> float:
    """Nodes of every table first (so that CREATE never meets a missing endpoint), then every relationship."""
    elapsed = 0.0
    for node in mapping.nodes:
        statement = ceiling_node(node)
        node_rows = [epoch_rows(b.nodes[node.table].upserts, node.epoch_props) for b in built[node.table]]
        started = time.monotonic()
        with driver.session() as session:
            for rows in node_rows:
                session.execute_write(_run_one, statement, rows)
        elapsed += time.monotonic() - started
    for node in mapping.nodes:
        batches = built[node.table]
        statements = ceiling_links(node)
        started = time.monotonic()
        with driver.session() as session:
            for b in batches:
                if node.table not in b.nodes:
                    continue
                session.execute_write(_run_many, statements, b.nodes[node.table].links)
        elapsed += time.monotonic() - started
    for join in mapping.joins:
        batches = built[join.table]
        statement = ceiling_join(join)
        started = time.monotonic()
        with driver.session() as session:
            for b in batches:
                rows = b.joins[join.table].upserts if join.table in b.joins else []
                session.execute_write(_run_one, statement, rows)
        elapsed += time.monotonic() - started
    return elapsed


# -- the APOC route: apoc.periodic.iterate over the same MERGE statements ------------------------------------


def _inner(statement: str) -> str:
    head = "UNWIND $rows AS r\n"
    assert statement.startswith(head)
    return statement[len(head) :]


def _iterate(driver: Driver, statement: str, rows: list[dict[str, Any]], params: dict[str, Any]) -> None:
    for at in range(0, len(rows), APOC_CHUNK):
        chunk = rows[at : at + APOC_CHUNK]
        records, _, _ = driver.execute_query(
            "CALL apoc.periodic.iterate('UNWIND $rows AS r RETURN r', $inner, "
            "{batchSize: $size, parallel: false, params: $params}) YIELD failedBatches, errorMessages "
            "RETURN failedBatches, errorMessages",
            inner=_inner(statement),
            size=PAGE,
            params={**params, "rows": chunk},
        )
        if records and records[0]["failedBatches"]:
            raise RuntimeError(f"apoc.periodic.iterate failed: {records[0]['errorMessages']}")


def run_apoc(built: Prebuilt, mapping: Mapping, driver: Driver) -> float:
    """Table by table, in mapping order (as pg2neo does): nodes then their FK relationships, then join tables."""
    elapsed = 0.0
    for entry in mapping.entries:
        batches = built[entry.table]
        params = {"epoch": 1, "synced_at": dt.datetime.now(dt.UTC)}
        # (statement, rows, params) in pg2neo's order, every row list made before the clock starts
        calls: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = []
        if isinstance(entry, NodeTable):
            st = node_statements(entry)
            upserts = [u for b in batches if entry.table in b.nodes for u in b.nodes[entry.table].upserts]
            calls.append((st.upsert, epoch_rows(upserts, entry.epoch_props), params))
            for i, link in enumerate(st.links):
                rows = [r for b in batches if entry.table in b.nodes for r in b.nodes[entry.table].links[i]]
                calls.append((link, rows, params))
        else:
            js = join_statements(entry)
            upserts = [u for b in batches if entry.table in b.joins for u in b.joins[entry.table].upserts]
            clear = [{"key": u["key"], "a": u["a"], "b": u["b"]} for u in upserts]
            calls += [(js.clear, clear, params), (js.upsert, upserts, params)]
        started = time.monotonic()
        for statement, rows, call_params in calls:
            _iterate(driver, statement, rows, call_params)
        elapsed += time.monotonic() - started
    return elapsed


# -- naive: one transaction per row -----------------------------------------------------------------------------


def run_naive(dsn: str, mapping: Mapping, driver: Driver, counts: dict[str, int], sample: int) -> tuple[int, float]:
    """Rows of every table in proportion to its size (at least 20), each written in its own transaction. The
    first NAIVE_WARMUP rows of each table are written before its clock starts: the extrapolation to a million
    rows must not charge the fresh JVM's first compilations of each statement to every row."""
    total = sum(counts.values())
    writer = GraphWriter(driver, mapping)
    builder = BatchBuilder(mapping)
    done = 0
    elapsed = 0.0
    with psycopg.connect(dsn, autocommit=True) as conn:
        prepare_connection(conn)
        for entry in mapping.entries:
            n = max(20, round(sample * counts.get(entry.name, 0) / max(total, 1)))
            rows = conn.execute(page_query(mapping, entry, after=False), [n + NAIVE_WARMUP]).fetchall()
            singles = []
            for row in rows:
                batch = builder.new_batch()
                builder.add_rows(batch, entry, [row])
                singles.append(batch)
            for batch in singles[:NAIVE_WARMUP]:
                writer.write(batch, 1)
            measured = singles[NAIVE_WARMUP:]
            started = time.monotonic()
            for batch in measured:
                writer.write(batch, 1)
            elapsed += time.monotonic() - started
            done += len(measured)
    return done, elapsed


# -- pg2neo ------------------------------------------------------------------------------------------------------


def run_pg2neo(dsn: str, mapping: Mapping, driver: Driver) -> float:
    with pipeline(dsn, driver, mapping) as synced:
        engine = synced.engine()
        engine.reset_snapshot()
        started = time.monotonic()
        run_snapshot(engine, Stopper(), lambda t, r: None)
        return time.monotonic() - started


def run_bulk(bench: Bench, dsn: str, mapping: Mapping, driver: Driver) -> float:
    out = STATE_BULK / "files"
    started = time.monotonic()
    outcome = bulk_load(dsn, driver, mapping, "neo4j", out, os.cpu_count() or 2, bench.stack.neo4j.import_full)
    seconds = time.monotonic() - started
    log(
        f"snapshot bulk: export {outcome.export_seconds:.1f}s, stop + import + start {outcome.import_seconds:.1f}s, "
        f"constraints and handoff {outcome.finish_seconds:.1f}s"
    )
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def main(bench: Bench) -> dict[str, Any]:
    scale = 1500 if bench.quick else 85_000
    sample = 300 if bench.quick else 2000
    load_before = load()
    dsn = bench.fresh_db(DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.monotonic()
        load_schema(conn)
        generate(conn, scale)
        counts = row_counts(conn)
        gen_seconds = time.monotonic() - started
        mapping = load_mapping(mapping_path(), conn)
        driver = bench.driver()
        install.init(conn, driver, mapping)
    rows_total = sum(counts.values())
    log(f"snapshot: {rows_total:,} rows generated (scale {scale}) in {gen_seconds:.0f}s")

    naive_runs: list[float] = []
    for i in range(bench.runs):
        driver = reset_graph(bench, driver, mapping)
        n, seconds = run_naive(dsn, mapping, driver, counts, sample)
        naive_runs.append(n / seconds)
        log(f"snapshot naive run {i + 1}/{bench.runs}: {n} rows in {seconds:.1f}s ({n / seconds:,.0f} rows/s)")
    t0 = time.monotonic()
    built = prebuild(dsn, mapping)
    log(f"snapshot: rows pre-built for APOC and the ceiling in {time.monotonic() - t0:.0f}s")
    runs: dict[str, list[float]] = {"pg2neo": [], "apoc": [], "ceiling": [], "bulk": []}
    graph: dict[str, dict[str, int]] = {}
    summary: dict[str, Any] = {}
    for i in range(bench.runs):
        for route in ("ceiling", "apoc", "bulk", "pg2neo"):
            driver = reset_graph(bench, driver, mapping)
            if route == "bulk":
                seconds = run_bulk(bench, dsn, mapping, driver)
                driver.close()  # Neo4j was restarted under it
                driver = bench.driver()
            elif route == "pg2neo":
                seconds = run_pg2neo(dsn, mapping, driver)
            elif route == "apoc":
                seconds = run_apoc(built, mapping, driver)
            else:
                seconds = run_ceiling(built, mapping, driver)
            runs[route].append(seconds)
            graph[route] = graph_counts(driver, mapping)
            log(f"snapshot run {i + 1}/{bench.runs} {route}: {seconds:.1f}s ({rows_total / seconds:,.0f} rows/s)")
        # written after every round, so that an interrupted full bench keeps what it measured
        summary = _report(bench, scale, sample, counts, runs, graph, naive_runs, load_before, i + 1)
    del built
    gc.unfreeze()
    gc.collect()
    driver.close()  # the last route run was pg2neo: the graph stays loaded for the memory benchmark
    return summary


def _report(
    bench: Bench,
    scale: int,
    sample: int,
    counts: dict[str, int],
    runs: dict[str, list[float]],
    graph: dict[str, dict[str, int]],
    naive_runs: list[float],
    load_before: dict[str, float],
    rounds_done: int,
) -> dict[str, Any]:
    rows_total = sum(counts.values())
    node_count = sum(v for k, v in graph["pg2neo"].items() if k.startswith(":"))
    rel_count = sum(v for k, v in graph["pg2neo"].items() if k.startswith("[:"))
    routes: dict[str, Any] = {}
    for route, timings in runs.items():
        s = median(timings)
        routes[route] = {
            "seconds_runs": timings,
            "seconds_median": s,
            "rows_per_s": rows_total / s,
            "nodes_per_s": node_count / s,
            "relationships_per_s": rel_count / s,
            "graph_counts": graph[route],
        }
    naive_rate = median(naive_runs)
    routes["naive"] = {
        "rows_per_s_runs": naive_runs,
        "rows_per_s": naive_rate,
        "sample_rows": sample,
        "extrapolated_seconds": rows_total / naive_rate,
        "note": "measured on a proportional sample of rows, one Neo4j transaction per row; rate extrapolated",
    }
    pg = routes["pg2neo"]["rows_per_s"]
    ratios = {
        "vs_naive": pg / naive_rate,
        "vs_apoc": pg / routes["apoc"]["rows_per_s"],
        "vs_ceiling": pg / routes["ceiling"]["rows_per_s"],
        "bulk_vs_apoc": routes["bulk"]["rows_per_s"] / routes["apoc"]["rows_per_s"],
        "bulk_vs_pg2neo": routes["bulk"]["rows_per_s"] / pg,
    }
    goals = {
        "vs_naive >= 20": ratios["vs_naive"] >= 20,
        "vs_apoc >= 1.2": ratios["vs_apoc"] >= 1.2,  # issue 17, item 2
        "vs_ceiling >= 0.5": ratios["vs_ceiling"] >= 0.5,
        "bulk_vs_apoc >= 5": ratios["bulk_vs_apoc"] >= 5,
    }
    doc = {
        "scale": scale,
        "rows": counts,
        "rows_total": rows_total,
        "nodes": node_count,
        "relationships": rel_count,
        "runs": bench.runs,
        "rounds_done": rounds_done,
        "partial": rounds_done < bench.runs,
        "routes": routes,
        "ratios": ratios,
        "goals_met": goals,
        "load_before": load_before,
        "load_after": load(),
        "method": __doc__,
    }
    write_result(bench, "snapshot", doc)
    _chart(bench, routes)
    return {"snapshot": {"rows_total": rows_total, "routes": routes, "ratios": ratios, "goals_met": goals}}


def _chart(bench: Bench, routes: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["naive", "apoc", "pg2neo", "ceiling", "bulk"]
    rates = [routes[n]["rows_per_s"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = ax.bar(
        [
            "naive\n(1 tx/row)",
            "APOC\nperiodic.iterate",
            "pg2neo\nrun_snapshot",
            "ceiling\nUNWIND CREATE",
            "pg2neo\nsnapshot --bulk",
        ],
        rates,
    )
    ax.bar_label(bars, labels=[f"{r:,.0f}" for r in rates])
    ax.set_ylabel("rows/s (median)")
    ax.set_title("Snapshot throughput (rows = nodes + join-table relationships)")
    fig.tight_layout()
    fig.savefig(chart_path(bench, "snapshot"), dpi=110)
    plt.close(fig)
