"""Background drift checks for `pg2neo run`: often the recently changed rows, rarely everything (reconcile stage).

`BackgroundCheck` is called from the service loop when it is idle (`on_idle`); it runs at most one check per
interval, publishes the drift per kind as the Prometheus gauge `pg2neo_drift{kind=...}` and the stale-sync alarm
(`kind="stale"`: rows changed more than `stale_after` seconds after their node was last synced).

A recent check looks only at recently changed rows, so it cannot clear drift that a full check found elsewhere:
the two are kept apart (`pg2neo_drift_by_check{kind,check}`, and per check in `pg2neo.state` row `drift`), and
`pg2neo_drift{kind}` is the larger of the two per kind: only the next full check lowers what a full check found.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from neo4j import Driver
from prometheus_client import Gauge

from pg2neo.logs import event, get_logger
from pg2neo.mapping.plan import Mapping
from pg2neo.reconcile.recent import verify_recent
from pg2neo.reconcile.verify import KINDS, VerifyReport, verify
from pg2neo.transport.state import record_drift

log = get_logger("reconcile")

DRIFT = Gauge("pg2neo_drift", "Drift found by the last background check", ["kind"])
STALE_ALARM = Gauge("pg2neo_stale_sync_alarm", "1 while some row changed long after its node was last synced")
LAST_CHECK = Gauge("pg2neo_drift_check_timestamp", "Unix time of the last background drift check", ["mode"])
DRIFT_BY_CHECK = Gauge("pg2neo_drift_by_check", "Drift found by the last check of each kind", ["kind", "check"])

# The last totals of each check mode, per database: a recent check must not erase what the full check found.
_LAST: dict[tuple[str, str], dict[str, int]] = {}


def publish(report: VerifyReport, pg_dsn: str = "") -> None:
    totals = report.totals()
    _LAST[(pg_dsn, report.mode)] = totals
    other = _LAST.get((pg_dsn, "recent" if report.mode == "full" else "full"), {})
    for kind in (*KINDS, "stale"):
        DRIFT_BY_CHECK.labels(kind, report.mode).set(totals.get(kind, 0))
        DRIFT.labels(kind).set(max(totals.get(kind, 0), other.get(kind, 0)))
    STALE_ALARM.set(1 if report.stale else 0)
    LAST_CHECK.labels(report.mode).set(time.time())


def record(pg_dsn: str, report: VerifyReport) -> None:
    """Keep the check's totals in `pg2neo.state` (row `drift`, one entry per mode) for `pg2neo status`."""
    value = {"totals": report.totals(), "drift": report.drift_total, "seconds": report.seconds}
    with psycopg.connect(pg_dsn, autocommit=True, connect_timeout=5) as conn:
        record_drift(conn, report.mode, value)


# The share of the time a background check may work: it runs in a thread of the service, and a check of many recently
# changed rows (a busy minute at thousands of changes per second) would otherwise hold the interpreter and Neo4j for
# minutes, while the applier falls behind the very changes it is checking. A full check holds one PostgreSQL snapshot
# from start to end (which holds back vacuum), so it gets a larger share than a recent one.
CHECK_SHARE = 0.25
FULL_CHECK_SHARE = 0.5


# While the service has a backlog it stops calling `on_idle`; a check then waits between chunks until the service has
# been idle within IDLE_GAP seconds (it calls `on_idle` every poll interval while the queue is empty), but never more
# than PATIENCE seconds per chunk, so that a check under sustained load still ends.
IDLE_GAP = 2.0
PATIENCE = 30.0
IDLE_POLL = 0.25


class Pacer:
    """Called between chunks of a check's work: sleeps so that the work between two calls takes at most `share` of
    the elapsed time, then, with `idle_since` (when the service was last idle), waits for the service to be idle
    (see PATIENCE)."""

    def __init__(
        self,
        share: float = CHECK_SHARE,
        clock: Callable[[], float] = time.monotonic,
        idle_since: Callable[[], float] | None = None,
        patience: float = PATIENCE,
    ) -> None:
        self.share = share
        self.clock = clock
        self.idle_since = idle_since
        self.patience = patience
        self.sleep: Callable[[float], None] = time.sleep
        self._mark = clock()

    def __call__(self, *_: object) -> None:
        worked = self.clock() - self._mark
        pause = worked * (1.0 - self.share) / self.share
        if pause > 0:
            self.sleep(pause)
        if self.idle_since is not None:
            waiting_since = self.clock()
            while self.clock() - self.idle_since() > IDLE_GAP and self.clock() - waiting_since < self.patience:
                self.sleep(IDLE_POLL)
        self._mark = self.clock()


def background_check(
    pg_dsn: str,
    driver: Driver,
    mapping: Mapping,
    since_seconds: float | None,
    stale_after_seconds: float = 60.0,
    database: str = "neo4j",
    pace: Pacer | None = None,
) -> VerifyReport:
    """One check: the rows/nodes changed in the last `since_seconds`, or everything when None; gauges updated.
    With `pace`, the check pauses between chunks (see `Pacer`)."""
    if since_seconds is None:
        report = verify(pg_dsn, driver, mapping, database, keep_drifts=0, progress=pace)
    else:
        report = verify_recent(pg_dsn, driver, mapping, since_seconds, stale_after_seconds, database, pace=pace)
    publish(report, pg_dsn)
    record(pg_dsn, report)
    event(log, "drift_checked", mode=report.mode, seconds=round(report.seconds, 2), **report.totals())
    return report


@dataclass
class BackgroundCheck:
    """The `on_idle` callback: a recent check every `interval` seconds, a full one every `full_interval`.

    Nothing runs at start (unless `full_at_start`): the first recent check comes after `interval`, the first full
    one after `full_interval`, so a restarted service spends its first minutes catching up, not scanning.

    Each check runs in a daemon thread so that the service loop goes on applying while it scans, paced (`Pacer`:
    a share of the time, and waiting while the service has a backlog); a call while the previous check still runs
    does nothing. A failed check is logged (`drift_check_failed`), never raised.
    """

    pg_dsn: str
    driver: Driver
    mapping: Mapping
    interval: float = 60.0
    full_interval: float = 3600.0
    stale_after_seconds: float = 60.0
    database: str = "neo4j"
    clock: Callable[[], float] = time.monotonic
    _last: float | None = field(default=None, init=False)
    _last_full: float | None = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _idle_at: float = field(default=0.0, init=False)  # when the service last said it was idle (called us)
    background: bool = True
    full_at_start: bool = False

    def __call__(self) -> None:
        now = self._idle_at = self.clock()
        if self._last is None and not self.full_at_start:
            # The first checks come one interval after start: a service (re)started under load catches up first.
            self._last = self._last_full = now
            return
        if self._last is not None and now - self._last < self.interval:
            return
        if self._thread is not None and self._thread.is_alive():
            return
        full = self._last_full is None or now - self._last_full >= self.full_interval
        since = None if full else self.interval * 2
        self._last = now
        if full:
            self._last_full = now
        if self.background:
            self._thread = threading.Thread(target=self._check, args=(since,), name="pg2neo-drift", daemon=True)
            self._thread.start()
        else:
            self._check(since)

    def _check(self, since: float | None) -> None:
        try:
            background_check(
                self.pg_dsn,
                self.driver,
                self.mapping,
                since,
                self.stale_after_seconds,
                self.database,
                pace=None if not self.background else self._pacer(FULL_CHECK_SHARE if since is None else CHECK_SHARE),
            )
        except Exception as exc:  # a check must never stop the service
            event(log, "drift_check_failed", error=type(exc).__name__, detail=str(exc)[:200])

    def _pacer(self, share: float) -> Pacer:
        return Pacer(share, self.clock, idle_since=lambda: self._idle_at)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
