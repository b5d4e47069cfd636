"""`pg2neo.audit`: one row per applied batch, snapshot page, TRUNCATE, repair or resolved conflict.

A batch's row carries the queue it left behind (`queue_depth`, `lag_seconds` in its counts), so the console can
chart depth and lag over the last hour.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg

# Audit rows that are batches (the audit also records other acts, e.g. a conflict resolved).
BATCH_KINDS = ["changes", "snapshot", "truncate"]

# The queue a batch leaves behind, recorded in its audit row. Index lookups, not a count: the depth is the span of the
# waiting sequence numbers, exact while the queue drains in order, an upper bound when a batch left gaps (a
# byte-bounded batch, a TRUNCATE applied alone).
QUEUE_AFTER = (
    "(SELECT jsonb_build_object('queue_depth', coalesce(max(seq) - min(seq) + 1, 0), 'lag_seconds', "
    "coalesce(extract(epoch FROM clock_timestamp() - (SELECT enqueued_at FROM pg2neo.changes ORDER BY seq LIMIT 1)), "
    "0)) FROM pg2neo.changes)"
)


@dataclass(frozen=True)
class AuditEntry:
    """What one applied batch records; `started_at` is derived from `duration_seconds` before now."""

    kind: str
    duration_seconds: float
    first_seq: int | None
    last_seq: int | None
    events: int
    counts: dict[str, int]
    attempts: int
    outcome: str
    epoch: int | None


class MinuteTotals(NamedTuple):
    """Over the last 60 seconds: change events applied and batches of any BATCH_KINDS kind."""

    events: int
    batches: int


class LastBatch(NamedTuple):
    kind: str
    finished_at: dt.datetime
    events: int
    counts: dict[str, Any]
    duration_ms: float
    last_seq: int | None


class AuditMinute(NamedTuple):
    """One minute of the audit (`at`: unix time of its start), with the largest queue a batch left in it."""

    at: float
    changes: int
    snapshot_rows: int
    batches: int
    queue_depth: float | None
    lag_seconds: float | None


def record_batch(conn: psycopg.Connection[Any], entry: AuditEntry) -> None:
    """Insert the batch's row, with the queue it leaves behind (QUEUE_AFTER) added to its counts."""
    conn.execute(
        "INSERT INTO pg2neo.audit (kind, started_at, first_seq, last_seq, events, counts, duration_ms, attempts, "
        "outcome, epoch) "
        "VALUES (%s, clock_timestamp() - make_interval(secs => %s), %s, %s, %s, %s::jsonb || " + QUEUE_AFTER + ", "
        "%s, %s, %s, %s)",
        (
            entry.kind,
            entry.duration_seconds,
            entry.first_seq,
            entry.last_seq,
            entry.events,
            json.dumps(entry.counts),
            entry.duration_seconds * 1000,
            entry.attempts,
            entry.outcome,
            entry.epoch,
        ),
    )


def prune_audit(conn: psycopg.Connection[Any], retention_days: int) -> int:
    """Delete rows older than the retention; returns how many went."""
    cur = conn.execute(
        "DELETE FROM pg2neo.audit WHERE finished_at < now() - make_interval(days => %s)", (retention_days,)
    )
    return cur.rowcount


def last_minute(conn: psycopg.Connection[Any]) -> MinuteTotals:
    row = conn.execute(
        "SELECT coalesce(sum(events) FILTER (WHERE kind = 'changes'), 0), count(*) FROM pg2neo.audit "
        "WHERE finished_at > clock_timestamp() - interval '60 seconds' AND kind = ANY(%s)",
        (BATCH_KINDS,),
    ).fetchone()
    assert row is not None
    return MinuteTotals(int(row[0]), int(row[1]))


def last_batch(conn: psycopg.Connection[Any]) -> LastBatch | None:
    row = conn.execute(
        "SELECT kind, finished_at, events, counts, duration_ms, last_seq FROM pg2neo.audit "
        "WHERE kind = ANY(%s) ORDER BY id DESC LIMIT 1",
        (BATCH_KINDS,),
    ).fetchone()
    return None if row is None else LastBatch(row[0], row[1], row[2], row[3], float(row[4]), row[5])


def audit_minutes(conn: psycopg.Connection[Any], seconds: int) -> tuple[float, list[AuditMinute]]:
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
    return float(now_row[0]), [AuditMinute(float(r[0]), int(r[1]), int(r[2]), int(r[3]), r[4], r[5]) for r in rows]


def recent_audit(conn: psycopg.Connection[Any], limit: int) -> list[dict[str, Any]]:
    """The last `limit` rows, newest first, as column → value (the console's table shows them as they are)."""
    cur = conn.execute(
        "SELECT id, kind, started_at, finished_at, first_seq, last_seq, events, counts, duration_ms, attempts, "
        "outcome FROM pg2neo.audit ORDER BY id DESC LIMIT %s",
        (limit,),
    )
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
