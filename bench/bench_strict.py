"""Benchmark: commit latency of a strict transaction (two-phase commit across PostgreSQL and Neo4j) vs a plain
PostgreSQL commit of the same write, in the same run.

Data flow measured: application write -> capture trigger -> (strict only) apply lock + epoch, re-read of the
queued rows, PREPARE TRANSACTION, one Neo4j transaction with the graph write and the marker, COMMIT PREPARED.
The plain commit goes through the same capture triggers (its event is queued for the asynchronous applier, which
does not run during the measurement). The two kinds alternate commit by commit, so both see the same noise.
Each commit: UPDATE of one person row (random id) and upsert of one member row, on a small three-table schema.
Output: bench/results/strict[_quick].json (median, p99, ratio, phases, PostgreSQL round trips per commit; machine;
versions).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

from bench.common import Bench, drop_graph_schema, load, log, median, percentile, pipeline, wipe_graph, write_result
from pg2neo.coordinate import recover
from pg2neo.devstack.stack import LocalStack
from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime import install
from pg2neo.runtime.service import Stopper, run_snapshot
from pg2neo.settings import DevSettings

DB = "bench_strict"
STATE_DIR = Path("/tmp/pg2neo-bench-strict")
PEOPLE = 2000  # rows in person (the SCHEMA's generate_series)
SCHEMA = """
CREATE TABLE team (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE person (
    id integer PRIMARY KEY, name text NOT NULL, score integer, team_id integer REFERENCES team (id)
);
CREATE TABLE member (
    person_id integer NOT NULL REFERENCES person (id), team_id integer NOT NULL REFERENCES team (id),
    role text, PRIMARY KEY (person_id, team_id)
);
INSERT INTO team SELECT i, 'team ' || i FROM generate_series(1, 50) i;
INSERT INTO person SELECT i, 'person ' || i, i, 1 + i % 50 FROM generate_series(1, 2000) i;
"""
MAPPING = """
nodes:
  - {table: team, label: Team}
  - table: person
    label: Person
    relationships:
      - {type: IN_TEAM, columns: team_id, to: team}
relationships:
  - table: member
    type: MEMBER
    from: {table: person, columns: person_id}
    to: {table: team, columns: team_id}
"""
PHASES = (  # (name, from step, to step) of StrictCoordinator's step hook
    # the application's statements, then the apply lock + epoch and the re-read of the changed rows
    ("statements_reread", "start", "after_read"),
    ("neo4j_write", "after_read", "before_prepare"),  # Neo4j transaction: marker, epoch claim, the writes
    ("prepare", "before_prepare", "after_prepare"),
    ("neo4j_commit", "after_prepare", "after_neo4j_commit"),
    ("commit_prepared", "after_neo4j_commit", "after_commit_prepared"),
)
UPDATE = "UPDATE person SET name = %s, score = %s WHERE id = %s"
UPSERT = (
    "INSERT INTO member (person_id, team_id, role) VALUES (%s, %s, %s) "
    "ON CONFLICT (person_id, team_id) DO UPDATE SET role = EXCLUDED.role"
)


def round_trips(conn: psycopg.Connection[Any], commit: Callable[[], None]) -> int:
    """PostgreSQL round trips of one commit on `conn`: the messages after which the client waits for the server
    (a simple Query, or the Sync that ends an extended-protocol statement or a pipeline), from libpq's trace."""
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            commit()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        messages = [line.rstrip("\n").split("\t") for line in trace]
        return sum(1 for m in messages if m[0] == "F" and m[2:3] in (["Query"], ["Sync"]))


def measure(bench: Bench, commits: int) -> dict[str, Any]:
    dsn = bench.fresh_db(DB)
    with bench.driver() as driver, psycopg.connect(dsn, autocommit=True) as admin:
        wipe_graph(driver)
        drop_graph_schema(driver)
        admin.execute(SCHEMA.encode())
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "strict.yaml"
            path.write_text(MAPPING, encoding="utf-8")
            mapping = load_mapping(path, admin)
        install.init(admin, driver, mapping)
        synced = pipeline(dsn, driver, mapping)
        engine = synced.engine()
        run_snapshot(engine, Stopper(), lambda t, r: None)
        marks: dict[str, float] = {}
        coordinator = synced.strict(on_step=lambda step: marks.__setitem__(step, time.perf_counter()))
        phases: dict[str, list[float]] = {name: [] for name, _, _ in PHASES}
        rng = random.Random(7)
        strict_ms: list[float] = []
        plain_ms: list[float] = []
        load_before = load()
        with psycopg.connect(dsn) as strict_conn, psycopg.connect(dsn) as plain_conn:

            def commit(kind: str, args: tuple[Any, ...], member: tuple[Any, ...]) -> None:
                if kind == "strict":
                    with coordinator.transaction(strict_conn) as tx:
                        tx.execute(UPDATE, args)
                        tx.execute(UPSERT, member)
                else:
                    with plain_conn.transaction():
                        plain_conn.execute(UPDATE, args)
                        plain_conn.execute(UPSERT, member)

            for i in range(commits + 20):  # the first 20 of each warm up connections and caches
                for kind in ("strict", "plain") if i % 2 == 0 else ("plain", "strict"):
                    args = (f"{kind} {i}", rng.randint(0, 1000), rng.randint(1, PEOPLE))
                    member = (args[2], rng.randint(1, 50), f"{kind} {i}")
                    started = time.perf_counter()
                    commit(kind, args, member)
                    elapsed = time.perf_counter() - started
                    if i < 20:
                        continue
                    (strict_ms if kind == "strict" else plain_ms).append(elapsed * 1000)
                    if kind == "strict":
                        marks["start"] = started
                        for name, begin, end in PHASES:
                            phases[name].append((marks[end] - marks[begin]) * 1000)
            trips = {
                kind: round_trips(conn, partial(commit, kind, (kind, 0, 1), (1, 1, kind)))
                for kind, conn in (("strict", strict_conn), ("plain", plain_conn))
            }
        load_after = load()
        report = recover(admin, driver)
        while engine.apply_next():
            pass
        synced.close()
    bench.drop_db(DB)
    strict = {"median": median(strict_ms), "p99": percentile(strict_ms, 99), "max": max(strict_ms)}
    plain = {"median": median(plain_ms), "p99": percentile(plain_ms, 99), "max": max(plain_ms)}
    figures: dict[str, Any] = {"commits_each": commits, "strict_ms": strict, "plain_ms": plain}
    figures["postgresql_round_trips_per_commit"] = trips
    figures["ratio"] = {"median": strict["median"] / plain["median"], "p99": strict["p99"] / plain["p99"]}
    figures["strict_phase_median_ms"] = {name: median(values) for name, values in phases.items()}
    figures["markers_removed_after"] = report.markers_removed
    figures["load_before"] = load_before
    figures["load_after"] = load_after
    return figures


def main(quick: bool) -> dict[str, Any]:
    commits = 60 if quick else 300
    # its own state folder: run_all has stopped the shared bench stack by now, and another benchmark run
    # may be using /tmp/pg2neo-bench on a shared machine
    stack = LocalStack(DevSettings(state_dir=STATE_DIR, neo4j_heap="1g", neo4j_pagecache="1g"))
    stack.up()
    try:
        bench = Bench(quick=quick, stack=stack)
        log(f"strict vs plain commit latency, {commits} commits each")
        figures = measure(bench, commits)
        doc = {
            "what": "commit latency: strict transaction (2PC PostgreSQL + Neo4j) vs plain PostgreSQL commit",
            "write": "UPDATE one person row + upsert one member row; capture triggers installed in both cases",
            "figures": figures,
        }
        path = write_result(bench, "strict", doc)
    finally:
        stack.down()
    log(
        f"strict median {figures['strict_ms']['median']:.2f} ms p99 {figures['strict_ms']['p99']:.2f} ms; "
        f"plain median {figures['plain_ms']['median']:.2f} ms p99 {figures['plain_ms']['p99']:.2f} ms; "
        f"ratio median {figures['ratio']['median']:.1f}x p99 {figures['ratio']['p99']:.1f}x; "
        f"PostgreSQL round trips per commit {figures['postgresql_round_trips_per_commit']}; "
        f"strict phases (median ms) { ({k: round(v, 2) for k, v in figures['strict_phase_median_ms'].items()}) } "
        f"-> {path}"
    )
    return {"strict": figures}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args().quick)
