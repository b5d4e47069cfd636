"""Benchmark of `pg2neo verify` (the reconcile stage's scan): time and peak RSS on the reference schema.

Builds scale 85,000 (about 1M rows; quick: 1,500) in a fresh database on its own LocalStack (state in
/tmp/pg2neo-bench-verify), runs init + snapshot (timed), then verify on the clean sync and again after about 1% of
the graph drifted (property changes, deleted nodes, deleted relationships). Each verify runs in a child process
whose peak RSS (`ru_maxrss`) is reported. Writes bench/results/verify[_quick].json.

Run alone: `python -m bench.bench_verify [--quick] [--scale N]`.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.common import Bench, log, pipeline, write_result
from pg2neo.demo.flow import mapping_path
from pg2neo.demo.generate import generate, load_schema
from pg2neo.devstack.stack import LocalStack
from pg2neo.mapping.resolve import load_mapping
from pg2neo.reconcile.verify import verify
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_snapshot
from pg2neo.settings import DevSettings

STATE = Path("/tmp/pg2neo-bench-verify")
DB = "bench_verify"


def child(dsn: str, uri: str, user: str, password: str) -> None:
    """One verify in this process; prints its figures as JSON (peak RSS included)."""
    conns = Connections(dsn, uri, user, password)
    with psycopg.connect(dsn) as conn:
        mapping = load_mapping(mapping_path(), conn)
    with conns.driver() as driver:
        started = time.monotonic()
        report = verify(dsn, driver, mapping, keep_drifts=0)
        seconds = time.monotonic() - started
    doc = report.as_dict()
    out = {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "drift": doc["totals"],
        "items_pg": sum(s["pg"] for s in doc["scopes"]),
        "items_neo4j": sum(s["neo4j"] for s in doc["scopes"]),
        "buckets": sum(s["buckets"] for s in doc["scopes"]),
        "differing_buckets": sum(s["differing_buckets"] for s in doc["scopes"]),
    }
    sys.stdout.write(json.dumps(out) + "\n")


def run_verify(conns: Connections) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_verify",
            "--child",
            conns.pg_dsn,
            conns.neo4j_uri,
            conns.neo4j_user,
            conns.neo4j_password,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def inject_drift(conns: Connections, fraction: float) -> dict[str, int]:
    """About `fraction` of each label changed (half), deleted (a quarter); a quarter as deleted relationships."""
    injected = {"changed_props": 0, "deleted_nodes": 0, "deleted_rels": 0}
    labels = ["Tenant", "User", "Program", "Project", "ContentItem", "ContentChunk", "Thread", "Message"]
    with conns.driver() as driver, driver.session() as session:
        for label in labels:
            total = session.run(f"MATCH (n:`{label}`) RETURN count(n) AS c").single()["c"]  # type: ignore[index]
            n = int(total * fraction)
            changed, deleted = n // 2, n // 4
            rels = n - changed - deleted
            injected["changed_props"] += session.run(
                f"MATCH (n:`{label}`) WITH n LIMIT $k SET n.`__drift` = true RETURN count(n) AS c", k=changed
            ).single()["c"]  # type: ignore[index]
            injected["deleted_nodes"] += session.run(
                f"MATCH (n:`{label}`) WHERE n.`__drift` IS NULL WITH n SKIP $s LIMIT $k DETACH DELETE n "
                "RETURN count(*) AS c",
                s=changed,
                k=deleted,
            ).single()["c"]  # type: ignore[index]
            injected["deleted_rels"] += session.run(
                f"MATCH (n:`{label}`)-[r]-() WHERE n.`__drift` IS NULL WITH DISTINCT r SKIP $s LIMIT $k DELETE r "
                "RETURN count(*) AS c",
                s=changed * 3,
                k=rels,
            ).single()["c"]  # type: ignore[index]
    return injected


def main(quick: bool, scale: int | None = None) -> dict[str, Any]:
    scale = scale or (1_500 if quick else 85_000)
    shutil.rmtree(STATE, ignore_errors=True)
    STATE.mkdir(parents=True)
    STATE.chmod(0o755)
    stack = LocalStack(DevSettings(state_dir=STATE, neo4j_heap="2g", neo4j_pagecache="2g"))
    log(f"verify bench: starting stack in {STATE}")
    stack.up()
    bench = Bench(quick=quick, stack=stack)
    try:
        dsn = bench.fresh_db(DB)
        conns = Connections(dsn, bench.info.neo4j_uri, bench.info.neo4j_user, bench.info.neo4j_password)
        with psycopg.connect(dsn, autocommit=True) as conn, conns.driver() as driver:
            load_schema(conn)
            started = time.monotonic()
            rows = generate(conn, scale)
            generate_s = time.monotonic() - started
            log(f"generated {sum(rows.values()):,} rows in {generate_s:.0f}s")
            mapping = load_mapping(mapping_path(), conn)
            install.init(conn, driver, mapping)
            with pipeline(dsn, driver, mapping) as synced:
                engine = synced.engine()
                started = time.monotonic()
                snapshot_rows = run_snapshot(engine, Stopper(), lambda t, r: None)
                snapshot_s = time.monotonic() - started
            log(f"snapshot {snapshot_rows:,} rows in {snapshot_s:.0f}s")
        clean = run_verify(conns)
        log(f"verify clean: {clean}")
        injected = inject_drift(conns, 0.01)
        log(f"injected {injected}")
        drifted = run_verify(conns)
        log(f"verify with drift: {drifted}")
        doc = {
            "scale": scale,
            "rows": rows,
            "rows_total": sum(rows.values()),
            "generate_seconds": round(generate_s, 1),
            "snapshot_seconds": round(snapshot_s, 1),
            "snapshot_rows_per_second": round(snapshot_rows / max(snapshot_s, 1e-9)),
            "verify_clean": clean,
            "injected": injected,
            "verify_drift": drifted,
            "how": "verify in a child process (ru_maxrss = its peak RSS); both servers on the same 2-core machine",
        }
        path = write_result(bench, "verify", doc)
        log(f"wrote {path}")
        print(json.dumps(doc, indent=2))
        return {
            "rows_total": doc["rows_total"],
            "verify_clean_s": clean["seconds"],
            "verify_clean_rss_mb": clean["peak_rss_mb"],
            "verify_drift_s": drifted["seconds"],
            "verify_drift_rss_mb": drifted["peak_rss_mb"],
            "snapshot_s": doc["snapshot_seconds"],
        }
    finally:
        stack.down()
        shutil.rmtree(STATE, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scale", type=int)
    parser.add_argument("--child", nargs=4)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
    else:
        main(args.quick, args.scale)
