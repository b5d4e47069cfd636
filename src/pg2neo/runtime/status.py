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
import os
import socket
import threading
import time
from typing import Any

import psycopg
from neo4j import Driver
from prometheus_client import Gauge

from pg2neo.logs import event, get_logger
from pg2neo.transport import audit, dead_letters, progress, state
from pg2neo.transport.queue import queue_span, queue_state

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
                state.write_heartbeat(c, self.name, value)
        except psycopg.Error:
            pass  # PostgreSQL is away: nothing to record it in; the retry loop logs the outage

    def start(self) -> None:
        """Mark the rows of dead services on this host gone (a killed service never clears its row), forget old ones.

        A row of this host whose heartbeat is stale and whose process no longer exists is a service that was killed:
        it is marked gone at once instead of reading "not responding" until it is forgotten."""
        try:
            with psycopg.connect(self.pg_dsn, autocommit=True, connect_timeout=3, application_name="pg2neo-hb") as c:
                state.forget_services(c, self.FORGET_AFTER)
                for name, pid in state.silent_services(c, self.host, self.name, self.EVERY * 2):
                    if pid is not None and _alive(pid):
                        continue
                    state.mark_service_gone(c, name)
                    event(log, "service_gone", service=name.removeprefix("service:"))
        except psycopg.Error:
            pass  # best effort: `status` still ages the row out by itself
        self.beat(force=True)

    def clear(self) -> None:
        try:
            with psycopg.connect(self.pg_dsn, autocommit=True, connect_timeout=3) as c:
                state.delete_state(c, self.name)
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


# -- `pg2neo status` -----------------------------------------------------------------------------------------------


def status_report(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    queue = queue_span(conn)
    minute = audit.last_minute(conn)
    last = audit.last_batch(conn)
    drift = state.read_drift(conn)
    schema = state.read_state(conn, state.SCHEMA_CHANGES)
    return {
        "queue_depth": queue.depth,
        "lag_seconds": round(queue.lag_seconds or 0.0, 3),
        "oldest_seq": queue.oldest_seq,
        "newest_seq": queue.newest_seq,
        "applied_last_minute": minute.events,
        "throughput_per_second": round(minute.events / 60.0, 1),
        "batches_last_minute": minute.batches,
        "dead_letters": dead_letters.count_dead_letters(conn),
        "last_batch": None
        if last is None
        else {
            "kind": last.kind,
            "finished_at": last.finished_at.isoformat(),
            "events": last.events,
            "counts": last.counts,
            "duration_ms": round(last.duration_ms, 1),
            "last_seq": last.last_seq,
        },
        "drift": None if drift is None else drift_summary(drift.value, drift.now),
        "services": [
            s for row in state.services(conn) if (s := _service(row.name, row.value, row.age_seconds)) is not None
        ],
        "snapshot": {
            row.table: {
                "rows": row.rows_done,
                "done": row.done,
                "started_at": row.started_at.isoformat() if row.started_at else None,
                "finished_at": row.finished_at.isoformat() if row.finished_at else None,
            }
            for row in progress.all_progress(conn)
        },
        "schema_changes": [] if schema is None else schema.get("changes", []),
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
