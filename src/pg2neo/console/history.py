"""The queue's depth and age for the console's charts, sampled every few seconds with
`pg2neo.transport.queue.queue_state` while the console runs (the last hour is kept).

The audit table (`pg2neo.transport.audit.audit_minutes`) records what each batch applied, not how long the queue
was: depth and lag are sampled by the console itself (so their charts start when the console starts), unless an
audit row carries `queue_depth` and `lag_seconds` in its counts, which are then drawn as well.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import psycopg

from pg2neo.logs import event, get_logger
from pg2neo.transport.queue import queue_state

log = get_logger("console")

WINDOW_SECONDS = 3600


@dataclass(frozen=True)
class Sample:
    at: float
    queue_depth: int
    lag_seconds: float


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
