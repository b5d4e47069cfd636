"""Micro-benchmark of the content hash (mapping/hashing.py) before and after the type-dispatch table (issue 17).

The hash is the live apply's largest own cost (`props_hash_hex` for every upserted node) and verify's per-node
cost (`props_hash` of every node read back). This times both on realistic rows of 17 columns: ints,
text, a UUID as text, floats, a numeric, timestamptz in UTC, a timestamp, a date, a bool, bytes, text[], json, NULLs;
as `convert` hands them over (numeric as float, json as text), as the Neo4j driver reads the node back (neo4j.time
DateTime/Date, bytearray), and with the numeric as a Decimal and the json as a map (kinds `canonical` also takes).
"before" is mapping/hashing.py at the commit before the change, loaded from git; both routes must
give the same hashes on every row, or the benchmark stops.

Not a test, no servers: `python -m bench.bench_hash [--rows N] [--runs N]` prints one JSON object (µs per row,
medians of the runs, before and after interleaved so that load changes hit both alike).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytz  # type: ignore[import-untyped]
from neo4j.time import Date, DateTime

from pg2neo.mapping import hashing

BEFORE_COMMIT = "d580afd"  # the last commit with the isinstance-chain-only hashing.py
REPO = Path(__file__).resolve().parent.parent


def load_before() -> types.ModuleType:
    source = subprocess.run(
        ["git", "show", f"{BEFORE_COMMIT}:src/pg2neo/mapping/hashing.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType("hashing_before")
    exec(compile(source, "hashing_before.py", "exec"), module.__dict__)  # our own file, from git
    return module


def pg_row(rng: random.Random, i: int) -> dict[str, Any]:
    created = dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=rng.randrange(10**8), microseconds=i)
    return {
        "id": i,
        "tenant_id": f"{rng.getrandbits(128):032x}",
        "title": f"Message {i} über Grüße",
        "body": "lorem ipsum dolor sit amet " * rng.randrange(1, 8),
        "score": rng.random(),
        "amount": round(rng.uniform(0, 10_000), 2),
        "exact": Decimal(rng.randrange(10**8)).scaleb(-4),
        "created_at": created,
        "updated_at": created + dt.timedelta(minutes=rng.randrange(1000)),
        "local_at": created.replace(tzinfo=None),
        "due": created.date(),
        "active": rng.random() < 0.5,
        "blob": rng.randbytes(16),
        "tags": [f"tag{rng.randrange(50)}" for _ in range(rng.randrange(4))],
        "meta": {"source": "app", "rank": rng.randrange(100), "weights": [0.5, 1.5]},
        "deleted_at": None,
        "parent_id": None if i % 3 else i - 1,
    }


def converted_row(row: dict[str, Any]) -> dict[str, Any]:
    """The row as `convert` hands it to the apply stage: numeric as float, json as PostgreSQL's text."""
    return {**row, "exact": float(row["exact"]), "meta": json.dumps(row["meta"])}


def neo4j_row(row: dict[str, Any]) -> dict[str, Any]:
    """The row as the Neo4j driver returns the stored node's properties (NULLs are absent)."""
    out = {k: v for k, v in converted_row(row).items() if v is not None}
    for name in ("created_at", "updated_at"):
        out[name] = DateTime.from_native(row[name].astimezone(pytz.FixedOffset(0)))
    out["local_at"] = DateTime.from_native(row["local_at"])
    out["due"] = Date.from_native(row["due"])
    out["blob"] = bytearray(row["blob"])
    return out


def time_per_row(function: Callable[[dict[str, Any]], object], rows: list[dict[str, Any]]) -> float:
    start = time.perf_counter()
    for row in rows:
        function(row)
    return (time.perf_counter() - start) / len(rows) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    before = load_before()
    rng = random.Random(17)
    pg_rows = [pg_row(rng, i) for i in range(args.rows)]
    converted_rows = [converted_row(r) for r in pg_rows]
    neo_rows = [neo4j_row(r) for r in pg_rows]

    cases = {
        "apply: props_hash_hex(converted row)": (before.props_hash_hex, hashing.props_hash_hex, converted_rows),
        "props_hash_hex(row with a Decimal and a JSON map)": (before.props_hash_hex, hashing.props_hash_hex, pg_rows),
        "verify: props_hash(Neo4j node)": (before.props_hash, hashing.props_hash, neo_rows),
    }
    results: dict[str, dict[str, float]] = {}
    for name, (old, new, rows) in cases.items():
        if [old(r) for r in rows] != [new(r) for r in rows]:
            sys.exit(f"{name}: the hashes differ from the original implementation")
        old_runs: list[float] = []
        new_runs: list[float] = []
        for _ in range(args.runs):
            old_runs.append(time_per_row(old, rows))
            new_runs.append(time_per_row(new, rows))
        old_us, new_us = statistics.median(old_runs), statistics.median(new_runs)
        results[name] = {
            "before_us_per_row": round(old_us, 2),
            "after_us_per_row": round(new_us, 2),
            "speedup": round(old_us / new_us, 2),
            # the fastest run of each is the least disturbed by other jobs on a shared machine
            "speedup_best_runs": round(min(old_runs) / min(new_runs), 2),
        }
    print(
        json.dumps(
            {
                "rows": args.rows,
                "runs": args.runs,
                "python": sys.version.split()[0],
                "load_average": os.getloadavg(),
                "note": (
                    "medians of the runs (speedup_best_runs: the fastest runs); before/after interleaved; "
                    "shared 2-core machine, absolute figures noisy"
                ),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
