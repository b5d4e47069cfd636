"""`pg2neo run` and `pg2neo snapshot`: the loops around the engine, with retries, metrics and status.

Errors are classified once, here at the boundary (`transient`): a lost server or connection, a session expired,
a deadlock or a Neo4j transient error is waited out (exponential backoff with full jitter, capped) forever — the
service never exits for them; it logs `transient_failure` / `waiting_for_servers`, sets
`pg2neo_servers_reachable` to 0, and resumes by itself. Anything else (schema drift, a bug) propagates: the
current batch rolls back, its events stay queued, and the command reports the error.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TypeVar

from prometheus_client import Counter

from pg2neo.apply.engine import BatchResult, Engine
from pg2neo.apply.failures import TRANSIENT
from pg2neo.errors import SchemaDriftError, is_transient
from pg2neo.logs import event, get_logger, redact
from pg2neo.runtime.schema_watch import SchemaChanged, SchemaWatch
from pg2neo.runtime.status import LAG_SECONDS, QUEUE_DEPTH, UP, Heartbeat, Monitor

__all__ = ["LAG_SECONDS", "QUEUE_DEPTH", "UP", "Heartbeat", "Stopper", "run_service", "run_snapshot"]

T = TypeVar("T")

log = get_logger("service")

EVENTS = Counter("pg2neo_applied_events", "Queued changes applied to Neo4j")
BATCHES = Counter("pg2neo_batches", "Batches committed to Neo4j", ["kind"])
RETRIES = Counter("pg2neo_retries", "Transient failures retried")
DEAD_LETTERS = Counter("pg2neo_dead_letters", "Rows sent to the dead-letter table")

AUDIT_PRUNE_EVERY = 3600.0  # seconds between deletions of audit rows older than the retention


def transient(exc: BaseException) -> bool:
    """True for failures worth waiting out; a Neo4j ClientError (constraint, unstorable value) is permanent."""
    return is_transient(exc) or isinstance(exc, TRANSIENT)


class Stopper:
    """Set by SIGTERM/SIGINT: the current batch finishes (or rolls back), then the loop returns."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def install(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            event(log, "stopping", signal=signal.Signals(signum).name)
            self.reason = f"stopped by {signal.Signals(signum).name}"
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
    schema_interval: float | None = 5.0,
    monitor_every: float = 2.0,
) -> int:
    """Apply queued changes until stopped (or, with until_empty, until the queue is drained). Returns events.

    Beside the loop, a `Monitor` keeps the queue gauges and the servers' reachability true while a batch is stuck,
    and a `SchemaWatch` (every `schema_interval` s, None: off) stops the loop between batches with `SchemaChanged`
    when a mapped table changed in a way the capture misses. Schema drift (and any other permanent error) is raised
    after logging it: queued events stay. A service that stops for an error or a signal leaves its row in
    `pg2neo.state` saying why (`pg2neo status` shows it for an hour); one that ends cleanly removes it.
    """
    heartbeat = Heartbeat(engine.pg_dsn)
    watch = None if schema_interval is None else SchemaWatch(engine.pg_dsn, engine.mapping, schema_interval)
    if watch is not None:
        try:
            _check_schema(watch)  # the baseline first: the sooner it is taken, the less DDL can slip in before it
        except SchemaChanged as exc:
            heartbeat.set("stopped", stop_reason(exc))
            raise
    heartbeat.start()
    monitor = Monitor(engine.pg_dsn, engine.writer.driver, engine.writer.database, heartbeat, monitor_every)
    monitor.start()
    try:
        applied = _service_loop(
            engine, stopper, poll_interval, until_empty, on_idle, audit_retention_days, heartbeat, watch
        )
    except BaseException as exc:
        monitor.stop()
        heartbeat.set("stopped", stop_reason(exc))
        raise
    monitor.stop()
    if stopper.reason:
        heartbeat.set("stopped", stopper.reason)
    else:
        heartbeat.clear()
    return applied


def stop_reason(exc: BaseException) -> str:
    if isinstance(exc, SchemaChanged):
        return "schema changed: " + "; ".join(f"{c.table}: {c.kind}" for c in exc.changes)
    if isinstance(exc, SchemaDriftError):
        return f"schema drift: {exc}"[:500]
    return f"{type(exc).__name__}: {redact(str(exc))}"[:500]


def _service_loop(
    engine: Engine,
    stopper: Stopper,
    poll_interval: float,
    until_empty: bool,
    on_idle: Callable[[], None] | None,
    audit_retention_days: int,
    heartbeat: Heartbeat,
    watch: SchemaWatch | None,
) -> int:
    applied = 0
    last_prune: float | None = None
    while not stopper.stopped:
        if last_prune is None or time.monotonic() - last_prune > AUDIT_PRUNE_EVERY:
            last_prune = time.monotonic()
            _prune_audit(engine, audit_retention_days)
        if watch is not None:
            _check_schema(watch)  # between batches: a batch never stops half-way for it
        try:
            result = with_retries(engine, stopper, engine.apply_next, heartbeat)
        except SchemaDriftError as exc:
            if watch is not None and not isinstance(exc, SchemaChanged):
                _check_schema(watch, force=True)  # a table that changed since the last check: say what changed
            event(log, "schema_drift", logging.ERROR, detail=str(exc))
            raise
        heartbeat.beat()
        if isinstance(result, BatchResult):
            record(result)
            applied += result.events
        if result is None:
            if until_empty:
                break
            if on_idle is not None:
                on_idle()
            stopper.sleep(poll_interval)
    return applied


def _check_schema(watch: SchemaWatch, force: bool = False) -> None:
    try:
        watch.check(force)
    except SchemaChanged:
        raise
    except Exception as exc:
        if not transient(exc):
            raise
        # PostgreSQL is away: the apply loop waits for it, and the next check compares again


def _prune_audit(engine: Engine, retention_days: int) -> None:
    try:
        removed = engine.prune_audit(retention_days)
    except Exception as exc:
        if not transient(exc):
            raise
        return  # the servers are away; the loop's retries will wait for them, pruning comes next time
    if removed:
        event(log, "audit_pruned", rows=removed, retention_days=retention_days)


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
