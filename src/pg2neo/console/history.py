"""The last hour for the console's charts: applied events per minute from `pg2neo.audit`, and the queue's depth
and age sampled every few seconds with `pg2neo.runtime.status.queue_state` while the console runs.

The audit table records what each batch applied, not how long the queue was: depth and lag are sampled by the
console itself (so their charts start when the console starts), unless an audit row carries `queue_depth` and
`lag_seconds` in its counts, which are then drawn as well.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import psycopg

from pg2neo.logs import event, get_logger
from pg2neo.runtime.status import queue_state

log = get_logger("console")

WINDOW_SECONDS = 3600


@dataclass(frozen=True)
class Minute:
    """One minute of the audit trail (`at`: unix time of the minute's start)."""

    at: float
    changes: int
    snapshot_rows: int
    batches: int
    queue_depth: float | None
    lag_seconds: float | None


@dataclass(frozen=True)
class Sample:
    at: float
    queue_depth: int
    lag_seconds: float


def audit_minutes(conn: psycopg.Connection[Any], seconds: int = WINDOW_SECONDS) -> tuple[float, list[Minute]]:
    """PostgreSQL's clock now (unix time) and the audit's minutes within the last `seconds`, oldest first."""
    now_row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    assert now_row is not None
    rows = conn.execute(
        "SELECT extract(epoch FROM date_trunc('minute', finished_at))::float8, "
        "coalesce(sum(events) FILTER (WHERE kind IN ('changes', 'truncate')), 0), "
        "coalesce(sum(events) FILTER (WHERE kind = 'snapshot'), 0), "
        "count(*) FILTER (WHERE kind IN ('changes', 'truncate', 'snapshot')), "
        "max((counts ->> 'queue_depth')::float8), max((counts ->> 'lag_seconds')::float8) "
        "FROM pg2neo.audit WHERE finished_at > clock_timestamp() - make_interval(secs => %s) GROUP BY 1 ORDER BY 1",
        (seconds,),
    ).fetchall()
    return float(now_row[0]), [Minute(float(r[0]), int(r[1]), int(r[2]), int(r[3]), r[4], r[5]) for r in rows]


def recent_batches(conn: psycopg.Connection[Any], limit: int = 15) -> list[dict[str, Any]]:
    """The last audit rows, newest first: batches, snapshot pages, repairs and resolved conflicts."""
    cur = conn.execute(
        "SELECT id, kind, started_at, finished_at, first_seq, last_seq, events, counts, duration_ms, attempts, "
        "outcome FROM pg2neo.audit ORDER BY id DESC LIMIT %s",
        (limit,),
    )
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


class QueueSampler:
    """Measures the queue's depth and age every `every` seconds on its own thread, keeping the last hour.

    Best effort: while PostgreSQL does not answer, no sample is taken (the gap shows in the chart)."""

    def __init__(self, pg_dsn: str, every: float = 5.0, keep_seconds: float = WINDOW_SECONDS) -> None:
        self.pg_dsn = pg_dsn
        self.every = every
        self.keep_seconds = keep_seconds
        self._samples: deque[Sample] = deque()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pg2neo-console-sampler", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def sample_once(self, conn: psycopg.Connection[Any]) -> None:
        depth, lag = queue_state(conn)
        now = time.time()
        with self._lock:
            self._samples.append(Sample(now, depth, lag))
            while self._samples and self._samples[0].at < now - self.keep_seconds:
                self._samples.popleft()

    def _loop(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stopped.is_set():
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = psycopg.connect(
                        self.pg_dsn, autocommit=True, connect_timeout=3, application_name="pg2neo-console"
                    )
                self.sample_once(conn)
                self._failing = False
            except psycopg.Error as exc:
                if not self._failing:  # once per outage, not every few seconds
                    event(log, "console_sample_failed", error=type(exc).__name__)
                self._failing = True
            self._stopped.wait(self.every)
        if conn is not None:
            conn.close()
