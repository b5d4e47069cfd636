"""Shared benchmark plumbing: the bench's own local stack, fresh databases, machine/version facts, result files.

Every benchmark module (bench/bench_*.py) gets a `Bench` from `run_all`, builds its data in its own PostgreSQL
database on the stack started here (state in /tmp/pg2neo-bench, bigger Neo4j heap and page cache), measures,
and writes `bench/results/<name>.json` (+ a PNG chart) through `write_result`, which stamps the machine, the
versions and the load average so that noisy numbers are recognisable as such.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import psycopg
from neo4j import Driver
from psycopg import sql

from pg2neo.demo.flow import mapping_path
from pg2neo.devstack.neo4j import APOC_VERSION, NEO4J_VERSION
from pg2neo.devstack.stack import LocalStack
from pg2neo.mapping.plan import Mapping
from pg2neo.pipeline import Pipeline
from pg2neo.runtime.connections import Connections
from pg2neo.settings import ApplySettings, CheckSettings, DevSettings, Settings

RESULTS = Path(__file__).resolve().parent / "results"
STATE_DIR = Path("/tmp/pg2neo-bench")
PGBENCH_CANDIDATES = ("/usr/lib/postgresql/15/bin/pgbench", "/usr/bin/pgbench")
NOISE_NOTE = (
    "Measured on a shared 2-core machine while other jobs (test suites of other developers) were running: "
    "absolute figures are noisy; the load average before/after each benchmark is recorded next to the figures."
)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))
    return float(ordered[rank])


def pgbench_path() -> str:
    for candidate in PGBENCH_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    raise FileNotFoundError("pgbench not found (apt-get install postgresql-15 / postgresql-client-15)")


def load() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {"load1": one, "load5": five, "load15": fifteen, "cpu_percent": psutil.cpu_percent(interval=0.5)}


@dataclass
class Bench:
    """The running bench stack and the options every benchmark shares."""

    quick: bool
    stack: LocalStack
    runs: int = 3
    backlogs: list[int] | None = None  # memory benchmark sizes (default: 100k and 1M; quick: 10k and 40k)
    notes: list[str] = field(default_factory=list)

    @property
    def info(self) -> Connections:
        i = self.stack.info()
        return Connections(i.pg_dsn, i.neo4j_uri, i.neo4j_user, i.neo4j_password)

    def fresh_db(self, name: str) -> str:
        """Drop and create database `name`; return its DSN."""
        admin = self.info.pg_dsn
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return psycopg.conninfo.make_conninfo(admin, dbname=name)

    def drop_db(self, name: str) -> None:
        with psycopg.connect(self.info.pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def driver(self) -> Driver:
        return self.info.driver()

    def empty_graph(self) -> None:
        """Replace the graph store by an empty one: stop Neo4j, delete the `neo4j` database's files, start it.

        At a million nodes this takes seconds where DETACH DELETE takes minutes; users and the system database
        stay, constraints are gone (callers create them again). Drivers made before must be replaced.
        """
        neo4j = self.stack.neo4j
        neo4j.stop()
        for sub in ("databases", "transactions"):
            shutil.rmtree(neo4j.root / "data" / sub / "neo4j", ignore_errors=True)
        neo4j.start()

    def service_env(self, dsn: str) -> dict[str, str]:
        info = self.info
        return {
            **os.environ,
            "PG2NEO_PG_DSN": dsn,
            "PG2NEO_NEO4J__URI": info.neo4j_uri,
            "PG2NEO_NEO4J__PASSWORD": info.neo4j_password,
            "PG2NEO_MAPPING": str(mapping_path()),
        }

    def service_command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pg2neo", "--log-level", "warning", *args]


@contextmanager
def bench_stack(quick: bool) -> Iterator[Bench]:
    """Start the bench's own PostgreSQL + Neo4j (bigger heap/page cache than the default), stop them at the end."""
    dev = DevSettings(
        state_dir=STATE_DIR,
        neo4j_heap="1g" if quick else "2g",
        neo4j_pagecache="1g" if quick else "2g",
        pg_shared_buffers="512MB",
    )
    stack = LocalStack(dev)
    stack.up()
    try:
        yield Bench(quick=quick, stack=stack)
    finally:
        stack.down()


def pipeline(dsn: str, driver: Driver, mapping: Mapping) -> Pipeline:
    """The pipeline a benchmark syncs through: the default apply and check settings, never the environment's."""
    return Pipeline(Settings(apply=ApplySettings(), check=CheckSettings()), dsn, driver, mapping)


def wipe_graph(driver: Driver) -> None:
    """Delete every node and relationship (constraints and indexes stay)."""
    with driver.session() as session:
        session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()


def drop_graph_schema(driver: Driver) -> None:
    with driver.session() as session:
        for record in list(session.run("SHOW CONSTRAINTS YIELD name RETURN name")):
            session.run(f"DROP CONSTRAINT `{record['name']}` IF EXISTS").consume()
        for record in list(session.run("SHOW INDEXES YIELD name, type WHERE type <> 'LOOKUP' RETURN name")):
            session.run(f"DROP INDEX `{record['name']}` IF EXISTS").consume()


def machine() -> dict[str, Any]:
    return {
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "shared": True,
        "noise": NOISE_NOTE,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def versions(bench: Bench) -> dict[str, Any]:
    out: dict[str, Any] = {
        "python": sys.version.split()[0],
        "pg2neo": metadata.version("pg2neo"),
        "neo4j_driver": metadata.version("neo4j"),
        "neo4j_rust_ext": _dist_version("neo4j-rust-ext"),
        "psycopg": metadata.version("psycopg"),
        "libpq": psycopg.pq.version(),
        "neo4j_expected": NEO4J_VERSION,
        "apoc_expected": APOC_VERSION,
    }
    try:
        with psycopg.connect(bench.info.pg_dsn) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            out["postgresql"] = row[0] if row else None
        with bench.driver() as driver:
            records, _, _ = driver.execute_query("CALL dbms.components() YIELD name, versions, edition RETURN *")
            out["neo4j"] = {r["name"]: {"versions": r["versions"], "edition": r["edition"]} for r in records}
            records, _, _ = driver.execute_query("RETURN apoc.version() AS v")
            out["apoc"] = records[0]["v"]
    except Exception as exc:
        out["error"] = repr(exc)
    out["pgbench"] = _pgbench_version()
    return out


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _pgbench_version() -> str | None:
    try:
        return subprocess.run([pgbench_path(), "--version"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def write_result(bench: Bench, name: str, doc: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if bench.quick else ""
    path = RESULTS / f"{name}{suffix}.json"
    full = {
        "benchmark": name,
        "quick": bench.quick,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "versions": versions(bench),
        **doc,
    }
    path.write_text(json.dumps(full, indent=2, default=str) + "\n")
    return path


def chart_path(bench: Bench, name: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / f"{name}{'_quick' if bench.quick else ''}.png"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)
