"""`pg2neo run` and `pg2neo snapshot`: the loops around the engine, with retries, metrics and status.

Errors are classified once, here at the boundary (`transient`): a lost server or connection, a session expired,
a deadlock or a Neo4j transient error is waited out (exponential backoff with full jitter, capped) forever — the
service never exits for them; it logs `transient_failure` / `waiting_for_servers`, sets
`pg2neo_servers_reachable` to 0, and resumes by itself. Anything else (schema drift, a bug) propagates: the
current batch rolls back, its events stay queued, and the command reports the error.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

import psycopg
from neo4j.exceptions import (
    ConnectionPoolError,
    IncompleteCommit,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)
from prometheus_client import Counter, Gauge

from pg2neo.errors import SchemaDriftError, is_transient
from pg2neo.logs import event, get_logger
from pg2neo.runtime.engine import BatchResult, Engine

T = TypeVar("T")

log = get_logger("service")

EVENTS = Counter("pg2neo_applied_events", "Queued changes applied to Neo4j")
BATCHES = Counter("pg2neo_batches", "Batches committed to Neo4j", ["kind"])
RETRIES = Counter("pg2neo_retries", "Transient failures retried")
DEAD_LETTERS = Counter("pg2neo_dead_letters", "Rows sent to the dead-letter table")
QUEUE_DEPTH = Gauge("pg2neo_queue_depth", "Changes waiting in the queue")
LAG_SECONDS = Gauge("pg2neo_lag_seconds", "Age of the oldest unapplied change")
UP = Gauge("pg2neo_servers_reachable", "1 when both servers answer, 0 while waiting for them")

AUDIT_PRUNE_EVERY = 3600.0  # seconds between deletions of audit rows older than the retention

# ServiceUnavailable covers a refused or dropped Bolt connection and IncompleteCommit (replaying is idempotent);
# psycopg's OperationalError covers lost connections, admin shutdown, deadlocks and serialization failures.
TRANSIENT: tuple[type[BaseException], ...] = (
    ServiceUnavailable,
    SessionExpired,
    IncompleteCommit,
    ConnectionPoolError,
    TransientError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    ConnectionError,
    TimeoutError,
)

_SECRETS = (
    re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE),
    re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)"),
)


def transient(exc: BaseException) -> bool:
    """True for failures worth waiting out; a Neo4j ClientError (constraint, unstorable value) is permanent."""
    return is_transient(exc) or isinstance(exc, TRANSIENT)


def redact(text: str) -> str:
    """Remove passwords from a message that may quote a connection string."""
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: m.group(1) + "***" + (m.group(3) if m.lastindex == 3 else ""), text)
    return text


class Stopper:
    """Set by SIGTERM/SIGINT: the current batch finishes (or rolls back), then the loop returns."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            event(log, "stopping", signal=signal.Signals(signum).name)
            self.event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    @property
    def stopped(self) -> bool:
        return self.event.is_set()

    def sleep(self, seconds: float) -> None:
        self.event.wait(seconds)


@dataclass
class Backoff:
    base: float = 0.2
    cap: float = 15.0
    attempt: int = 0

    def next_delay(self) -> float:
        self.attempt += 1
        return random.uniform(0, min(self.cap, self.base * 2**self.attempt))

    def reset(self) -> None:
        self.attempt = 0


class Heartbeat:
    """What the service is doing, kept in `pg2neo.state` (row `service:<host>:<pid>`) for `pg2neo status`.

    Best effort, on its own short-lived connection: while PostgreSQL is away nothing can be recorded, and a write
    that fails is skipped (the next one repeats it). `status` calls a service whose heartbeat is older than
    STALE_AFTER seconds not responding.
    """

    EVERY = 5.0
    STALE_AFTER = 30.0

    def __init__(self, pg_dsn: str) -> None:
        self.pg_dsn = pg_dsn
        self.name = f"service:{socket.gethostname()}:{os.getpid()}"
        self.state = "starting"
        self.detail = ""
        self.since = time.time()
        self._written = 0.0

    def set(self, state: str, detail: str = "") -> None:
        if state != self.state:
            self.state, self.detail, self.since = state, detail, time.time()
            self.beat(force=True)

    def beat(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._written < self.EVERY:
            return
        self._written = time.monotonic()
        self._write({"state": self.state, "detail": self.detail, "since": self.since, "pid": os.getpid()})

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

    def clear(self) -> None:
        try:
            with psycopg.connect(self.pg_dsn, autocommit=True, connect_timeout=3) as c:
                c.execute("DELETE FROM pg2neo.state WHERE name = %s", (self.name,))
        except psycopg.Error:
            pass  # left behind, it turns stale and `status` says the service is not responding


def with_retries(
    engine: Engine,
    stopper: Stopper,
    step: Callable[[], T],
    heartbeat: Heartbeat | None = None,
) -> T | None:
    """Run one step; on a transient failure wait (backoff with jitter) and retry until it works or we stop."""
    backoff = Backoff()
    waiting_since: float | None = None
    while not stopper.stopped:
        engine.attempts = backoff.attempt + 1
        try:
            result = step()
            if waiting_since is not None:
                event(
                    log,
                    "servers_back",
                    after_attempts=backoff.attempt,
                    waited_seconds=round(time.monotonic() - waiting_since, 1),
                )
            UP.set(1)
            if heartbeat is not None:
                heartbeat.set("running")
            return result
        except Exception as exc:
            if not transient(exc):
                raise
            engine.close()
            UP.set(0)
            RETRIES.inc()
            delay = backoff.next_delay()
            if waiting_since is None:
                waiting_since = time.monotonic()
            event(
                log,
                "transient_failure" if backoff.attempt < 4 else "waiting_for_servers",
                logging.WARNING,
                error=type(exc).__name__,
                detail=redact(str(exc))[:300],
                retry_in=round(delay, 2),
                attempt=backoff.attempt,
                waiting_seconds=round(time.monotonic() - waiting_since, 1),
            )
            if heartbeat is not None:
                heartbeat.set("waiting", f"waiting for the servers: {type(exc).__name__}: {redact(str(exc))[:200]}")
                heartbeat.beat()  # still alive while waiting: a long outage must not read as "not responding"
            stopper.sleep(delay)
        finally:
            engine.attempts = 1
    return None


def record(result: BatchResult) -> None:
    BATCHES.labels(result.kind).inc()
    if result.kind == "changes":
        EVENTS.inc(result.events)
    if result.dead_letters:
        DEAD_LETTERS.inc(result.dead_letters)


def run_service(
    engine: Engine,
    stopper: Stopper,
    poll_interval: float,
    until_empty: bool = False,
    on_idle: Callable[[], None] | None = None,
    audit_retention_days: int = 30,
) -> int:
    """Apply queued changes until stopped (or, with until_empty, until the queue is drained). Returns events.

    Schema drift (and any other permanent error) is raised after logging `schema_drift`: queued events stay.
    """
    heartbeat = Heartbeat(engine.pg_dsn)
    try:
        return _service_loop(engine, stopper, poll_interval, until_empty, on_idle, audit_retention_days, heartbeat)
    finally:
        heartbeat.clear()


def _service_loop(
    engine: Engine,
    stopper: Stopper,
    poll_interval: float,
    until_empty: bool,
    on_idle: Callable[[], None] | None,
    audit_retention_days: int,
    heartbeat: Heartbeat,
) -> int:
    applied = 0
    last_gauges = 0.0
    last_prune: float | None = None
    while not stopper.stopped:
        if last_prune is None or time.monotonic() - last_prune > AUDIT_PRUNE_EVERY:
            last_prune = time.monotonic()
            _prune_audit(engine, audit_retention_days)
        try:
            result = with_retries(engine, stopper, engine.apply_next, heartbeat)
        except SchemaDriftError as exc:
            event(log, "schema_drift", logging.ERROR, detail=str(exc))
            heartbeat.set("stopped", f"schema drift: {exc}"[:500])
            raise
        heartbeat.beat()
        if isinstance(result, BatchResult):
            record(result)
            applied += result.events
        now = time.monotonic()
        if now - last_gauges > 5 or result is None:
            last_gauges = now
            _update_gauges(engine)
        if result is None:
            if until_empty:
                break
            if on_idle is not None:
                on_idle()
            stopper.sleep(poll_interval)
    return applied


def _prune_audit(engine: Engine, retention_days: int) -> None:
    try:
        removed = engine.prune_audit(retention_days)
    except Exception as exc:
        if not transient(exc):
            raise
        return  # the servers are away; the loop's retries will wait for them, pruning comes next time
    if removed:
        event(log, "audit_pruned", rows=removed, retention_days=retention_days)


def _update_gauges(engine: Engine) -> None:
    try:
        depth, lag = queue_state(engine.conn)
    except psycopg.Error:
        return
    QUEUE_DEPTH.set(depth)
    LAG_SECONDS.set(lag)


def queue_state(conn: psycopg.Connection[Any]) -> tuple[int, float]:
    row = conn.execute(
        "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(enqueued_at)), 0) FROM pg2neo.changes"
    ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1])


def run_snapshot(engine: Engine, stopper: Stopper, on_page: Callable[[str, BatchResult], None]) -> int:
    """Load every mapped table's existing rows, resuming from `pg2neo.snapshot_progress`; returns the rows loaded."""
    total = 0

    def page_done(table: str, result: BatchResult) -> None:
        nonlocal total
        record(result)
        total += result.events
        on_page(table, result)

    for entry in engine.mapping.entries:
        while not stopper.stopped:
            done = with_retries(
                engine,
                stopper,
                lambda e=entry: engine.snapshot_window(  # type: ignore[misc]
                    e, lambda: not stopper.stopped, lambda result: page_done(e.table, result)
                ),
            )
            if done is not False:
                break  # the table is done, or we were stopped
    return total
