"""What a service says about itself, and `pg2neo status`, which reads it back from PostgreSQL alone.

- `Heartbeat` keeps the service's state (running, waiting and why, stopped and why) in `pg2neo.state`.
- `Monitor` measures, on its own threads and connections, what must stay true while the apply loop is stuck in a
  batch (a Neo4j outage can hold one batch for as long as the driver retries it): the queue's depth and age from
  PostgreSQL, and whether each server answers. So the gauges and the state turn within seconds of a failure, not
  when the batch gives up.
- `status_report` puts the queue, throughput, dead letters, drift, services, snapshot progress and schema changes
  together for `pg2neo status`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
from typing import Any

import psycopg
from neo4j import Driver
from prometheus_client import Gauge

from pg2neo.logs import event, get_logger

log = get_logger("status")

QUEUE_DEPTH = Gauge("pg2neo_queue_depth", "Changes waiting in the queue (measured every few seconds)")
LAG_SECONDS = Gauge("pg2neo_lag_seconds", "Age of the oldest unapplied change (measured every few seconds)")
UP = Gauge("pg2neo_servers_reachable", "1 when both servers answer, 0 while waiting for them")


class Heartbeat:
    """What the service is doing, kept in `pg2neo.state` (row `service:<host>:<pid>`) for `pg2neo status`.

    Two sources set it: the apply loop (`set`: starting, running, waiting after a failed batch, stopped) and the
    monitor (`problem`: a server that does not answer its probe). Either one waiting makes the service waiting.
    Best effort, on its own short-lived connection: while PostgreSQL is away nothing can be recorded, and a write
    that fails is skipped (the next one repeats it). `status` calls a service whose heartbeat is older than
    STALE_AFTER seconds not responding, older than GONE_AFTER gone, and forgets it after FORGET_AFTER.
    """

    EVERY = 5.0
    STALE_AFTER = 30.0
    GONE_AFTER = 120.0
    FORGET_AFTER = 3600.0

    def __init__(self, pg_dsn: str) -> None:
        self.pg_dsn = pg_dsn
        self.host = socket.gethostname()
        self.name = f"service:{self.host}:{os.getpid()}"
        self.state = "starting"
        self.detail = ""
        self.since = time.time()
        self._loop = ("starting", "")
        self._problems: dict[str, str] = {}
        self._lock = threading.RLock()
        self._written = 0.0

    def set(self, state: str, detail: str = "") -> None:
        """The apply loop's own state."""
        with self._lock:
            self._loop = (state, detail)
            self._refresh()

    def problem(self, server: str, detail: str | None) -> None:
        """The monitor's verdict on one server: None when it answers."""
        with self._lock:
            if detail is None:
                self._problems.pop(server, None)
            else:
                self._problems[server] = detail
            self._refresh()

    def _refresh(self) -> None:
        state, detail = self._loop
        if state != "stopped" and self._problems:
            state = "waiting"
            detail = "waiting for the servers: " + "; ".join(f"{k}: {v}" for k, v in sorted(self._problems.items()))
        if state == "waiting":
            UP.set(0)
        elif state == "running":
            UP.set(1)
        if (state, detail) != (self.state, self.detail):
            if state != self.state:
                self.since = time.time()
            self.state, self.detail = state, detail
            self.beat(force=True)

    def beat(self, force: bool = False) -> None:
        with self._lock:
            if not force and time.monotonic() - self._written < self.EVERY:
                return
            self._written = time.monotonic()
            value = {"state": self.state, "detail": self.detail, "since": self.since, "pid": os.getpid()}
        self._write(value)

    def _write(self, value: dict[str, Any]) -> None:
        try:
            with psycopg.connect(self.pg_dsn, autocommit=True, connect_timeout=3, application_name="pg2neo-hb") as c:
                c.execute(
                    "INSERT INTO pg2neo.state (name, value) VALUES (%s, %s::jsonb || jsonb_build_object("
                    "'heartbeat', extract(epoch FROM clock_timestamp()))) "
                    "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    (self.name, json.dumps(value)),
                )
        except psycopg.Error:
            pass  # PostgreSQL is away: nothing to record it in; the retry loop logs the outage

    def start(self) -> None:
        """Mark the rows of dead services on this host gone (a killed service never clears its row), forget old ones.

        A row of this host whose heartbeat is stale and whose process no longer exists is a service that was killed:
        it is marked gone at once instead of reading "not responding" until it is forgotten."""
        try:
            with psycopg.connect(self.pg_dsn, autocommit=True, connect_timeout=3, application_name="pg2neo-hb") as c:
                c.execute(
                    "DELETE FROM pg2neo.state WHERE name LIKE 'service:%%' AND "
                    "extract(epoch FROM clock_timestamp()) - (value->>'heartbeat')::float8 > %s",
                    (self.FORGET_AFTER,),
                )
                rows = c.execute(
                    "SELECT name, (value->>'pid')::int FROM pg2neo.state WHERE name LIKE %s AND name <> %s "
                    "AND coalesce(value->>'state', '') NOT IN ('gone', 'stopped') "
                    "AND extract(epoch FROM clock_timestamp()) - (value->>'heartbeat')::float8 > %s",
                    (f"service:{self.host}:%", self.name, self.EVERY * 2),
                ).fetchall()
                for name, pid in rows:
                    if pid is not None and _alive(int(pid)):
                        continue
                    c.execute(
                        "UPDATE pg2neo.state SET value = value || jsonb_build_object('state', 'gone', 'detail', "
                        "'the process is gone (killed?); a new service started on this host') WHERE name = %s",
                        (name,),
                    )
                    event(log, "service_gone", service=name.removeprefix("service:"))
        except psycopg.Error:
            pass  # best effort: `status` still ages the row out by itself
        self.beat(force=True)

    def clear(self) -> None:
        try:
            with psycopg.connect(self.pg_dsn, autocommit=True, connect_timeout=3) as c:
                c.execute("DELETE FROM pg2neo.state WHERE name = %s", (self.name,))
        except psycopg.Error:
            pass  # left behind, it turns stale and `status` says the service is not responding, then gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another account's process
    return True


class Monitor:
    """Probes both servers and measures the queue every `every` seconds, beside the apply loop.

    One thread per server, so a server that hangs (no answer, no refusal) does not stop the other measure. A probe
    that fails marks the service waiting (`Heartbeat.problem`), which sets `pg2neo_servers_reachable` to 0; one that
    answers clears it. The heartbeat is written from here too: a batch held by the driver's retries for minutes
    must not read as "not responding".
    """

    def __init__(self, pg_dsn: str, driver: Driver, database: str, heartbeat: Heartbeat, every: float = 2.0) -> None:
        self.pg_dsn = pg_dsn
        self.driver = driver
        self.database = database
        self.heartbeat = heartbeat
        self.every = every
        self.stopped = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(self._measure_queue,), name="pg2neo-monitor-pg", daemon=True),
            threading.Thread(target=self._loop, args=(self._probe_neo4j,), name="pg2neo-monitor-neo4j", daemon=True),
        ]
        self._conn: psycopg.Connection[Any] | None = None

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.stopped.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _loop(self, probe: Any) -> None:
        while not self.stopped.is_set():
            probe()
            self.heartbeat.beat()
            self.stopped.wait(self.every)
        if self._conn is not None and probe == self._measure_queue:
            self._conn.close()

    def _measure_queue(self) -> None:
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(
                    self.pg_dsn,
                    autocommit=True,
                    connect_timeout=3,
                    application_name="pg2neo-monitor",
                    options="-c statement_timeout=5000",
                )
            depth, lag = queue_state(self._conn)
        except psycopg.Error as exc:
            self.heartbeat.problem("PostgreSQL", _describe(exc))
            return
        QUEUE_DEPTH.set(depth)
        LAG_SECONDS.set(lag)
        self.heartbeat.problem("PostgreSQL", None)

    def _probe_neo4j(self) -> None:
        try:
            # No driver-level retry here: the probe must say "no" at the first refusal, not after 30 s of retries.
            with self.driver.session(
                database=self.database, connection_acquisition_timeout=5.0, disable_auto_commit_retries=True
            ) as session:
                session.run("RETURN 1").consume()
        except Exception as exc:  # any failure to answer is what the probe reports
            self.heartbeat.problem("Neo4j", _describe(exc))
            return
        self.heartbeat.problem("Neo4j", None)


def _describe(exc: BaseException) -> str:
    from pg2neo.logs import redact

    return f"{type(exc).__name__}: {redact(str(exc).strip())}"[:200]


def queue_state(conn: psycopg.Connection[Any]) -> tuple[int, float]:
    """Depth and age of the queue, from the queue itself: true whether or not batches are being applied."""
    row = conn.execute(
        "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(enqueued_at)), 0) FROM pg2neo.changes"
    ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1])


# -- `pg2neo status` -----------------------------------------------------------------------------------------------


# Audit rows that are batches (the audit also records other acts, e.g. a conflict resolved).
BATCH_KINDS = ["changes", "snapshot", "truncate"]


def status_report(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    queue = conn.execute(
        "SELECT count(*), extract(epoch FROM clock_timestamp() - min(enqueued_at)), min(seq), max(seq) "
        "FROM pg2neo.changes"
    ).fetchone()
    assert queue is not None
    minute = conn.execute(
        "SELECT coalesce(sum(events) FILTER (WHERE kind = 'changes'), 0), count(*) FROM pg2neo.audit "
        "WHERE finished_at > clock_timestamp() - interval '60 seconds' AND kind = ANY(%s)",
        (BATCH_KINDS,),
    ).fetchone()
    assert minute is not None
    dead = conn.execute("SELECT count(*) FROM pg2neo.dead_letters").fetchone()
    last = conn.execute(
        "SELECT kind, finished_at, events, counts, duration_ms, last_seq FROM pg2neo.audit "
        "WHERE kind = ANY(%s) ORDER BY id DESC LIMIT 1",
        (BATCH_KINDS,),
    ).fetchone()
    services = conn.execute(
        "SELECT name, value, extract(epoch FROM clock_timestamp()) - (value->>'heartbeat')::float8 "
        "FROM pg2neo.state WHERE name LIKE 'service:%%' ORDER BY name"
    ).fetchall()
    drift = conn.execute(
        "SELECT value, extract(epoch FROM clock_timestamp()) FROM pg2neo.state WHERE name = 'drift'"
    ).fetchone()
    schema = conn.execute("SELECT value FROM pg2neo.state WHERE name = 'schema_changes'").fetchone()
    snapshot = conn.execute(
        "SELECT tbl, rows_done, done, started_at, finished_at FROM pg2neo.snapshot_progress ORDER BY tbl"
    ).fetchall()
    return {
        "queue_depth": int(queue[0]),
        "lag_seconds": round(float(queue[1] or 0.0), 3),
        "oldest_seq": queue[2],
        "newest_seq": queue[3],
        "applied_last_minute": int(minute[0]),
        "throughput_per_second": round(int(minute[0]) / 60.0, 1),
        "batches_last_minute": int(minute[1]),
        "dead_letters": int(dead[0]) if dead else 0,
        "last_batch": None
        if last is None
        else {
            "kind": last[0],
            "finished_at": last[1].isoformat(),
            "events": last[2],
            "counts": last[3],
            "duration_ms": round(float(last[4]), 1),
            "last_seq": last[5],
        },
        "drift": None if drift is None else drift_summary(drift[0], float(drift[1])),
        "services": [s for name, value, age in services if (s := _service(name, value, float(age))) is not None],
        "snapshot": {
            row[0]: {
                "rows": int(row[1]),
                "done": bool(row[2]),
                "started_at": row[3].isoformat() if row[3] else None,
                "finished_at": row[4].isoformat() if row[4] else None,
            }
            for row in snapshot
        },
        "schema_changes": [] if schema is None else schema[0].get("changes", []),
    }


def drift_summary(value: dict[str, Any], now: float) -> dict[str, Any]:
    """The drift known now: per kind, the larger of the last full and the last recent check's counts.

    A recent check sees only recently changed rows: finding none of the drift a full check found does not mean it
    was repaired, so it never lowers the full check's figures (the next full check does)."""
    checks: dict[str, Any] = {
        mode: {**value[mode], "seconds_ago": round(now - float(value[mode]["at"]), 1)}
        for mode in ("full", "recent")
        if isinstance(value.get(mode), dict)
    }
    if not checks and "mode" in value:  # a row written before checks were kept apart
        checks[value["mode"]] = {**value, "seconds_ago": round(now - float(value.get("at", now)), 1)}
    totals: dict[str, int] = {}
    for check in checks.values():
        for kind, count in check["totals"].items():
            totals[kind] = max(totals.get(kind, 0), int(count))
    latest = min(checks, key=lambda mode: checks[mode]["seconds_ago"]) if checks else "none"
    return {
        "last_check": latest,
        "seconds_ago": checks[latest]["seconds_ago"] if checks else None,
        "total": sum(totals.values()),
        **totals,
        "checks": checks,
    }


def _service(name: str, value: dict[str, Any], age: float) -> dict[str, Any] | None:
    if age > Heartbeat.FORGET_AFTER:
        return None
    beat_at = time.time() - age
    state = str(value.get("state") or "")
    if state not in ("stopped", "gone"):
        if age > Heartbeat.GONE_AFTER:
            state = "gone"
        elif age > Heartbeat.STALE_AFTER:
            state = "not responding"
    shown = state
    if state == "gone":
        shown = f"gone since {_clock(beat_at)}"
    elif state == "stopped":
        shown = f"stopped at {_clock(float(value.get('since') or beat_at))}"
    return {
        "name": name.removeprefix("service:"),
        "state": state,
        "shown": shown,
        "detail": value.get("detail") or "",
        "heartbeat_seconds_ago": round(age, 1),
        "since": value.get("since"),
    }


def _clock(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
