"""`pg2neo run` and `pg2neo snapshot`: the loops around the engine, with retries, metrics and status."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import psycopg
from neo4j.exceptions import ServiceUnavailable, SessionExpired, TransientError
from prometheus_client import Counter, Gauge

from pg2neo.errors import is_transient
from pg2neo.logs import event, get_logger
from pg2neo.runtime.engine import BatchResult, Engine

log = get_logger("service")

EVENTS = Counter("pg2neo_applied_events", "Queued changes applied to Neo4j")
BATCHES = Counter("pg2neo_batches", "Batches committed to Neo4j", ["kind"])
RETRIES = Counter("pg2neo_retries", "Transient failures retried")
DEAD_LETTERS = Counter("pg2neo_dead_letters", "Rows sent to the dead-letter table")
QUEUE_DEPTH = Gauge("pg2neo_queue_depth", "Changes waiting in the queue")
LAG_SECONDS = Gauge("pg2neo_lag_seconds", "Age of the oldest unapplied change")
UP = Gauge("pg2neo_servers_reachable", "1 when both servers answer, 0 while waiting for them")

TRANSIENT = (ServiceUnavailable, SessionExpired, TransientError, psycopg.OperationalError, ConnectionError)


def transient(exc: BaseException) -> bool:
    return is_transient(exc) or isinstance(exc, TRANSIENT)


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


def with_retries(
    engine: Engine, stopper: Stopper, step: Callable[[], BatchResult | None]
) -> BatchResult | Exception | None:
    """Run one step; on a transient failure wait (backoff with jitter) and retry until it works or we stop."""
    backoff = Backoff()
    while not stopper.stopped:
        try:
            result = step()
            if backoff.attempt:
                event(log, "servers_back", after_attempts=backoff.attempt)
            UP.set(1)
            return result
        except Exception as exc:
            if not transient(exc):
                raise
            engine.close()
            UP.set(0)
            RETRIES.inc()
            delay = backoff.next_delay()
            event(
                log,
                "transient_failure",
                error=type(exc).__name__,
                detail=str(exc)[:200],
                retry_in=round(delay, 2),
                attempt=backoff.attempt,
            )
            stopper.sleep(delay)
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
) -> int:
    """Apply queued changes until stopped (or, with until_empty, until the queue is drained). Returns events."""
    applied = 0
    last_gauges = 0.0
    while not stopper.stopped:
        result = with_retries(engine, stopper, engine.apply_next)
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
    total = 0
    for entry in engine.mapping.entries:
        while not stopper.stopped:
            result = with_retries(engine, stopper, lambda e=entry: engine.snapshot_page(e))  # type: ignore[misc]
            if not isinstance(result, BatchResult):
                break
            record(result)
            total += result.events
            on_page(entry.table, result)
            if result.done:
                break
    return total
