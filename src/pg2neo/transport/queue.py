"""`pg2neo.changes`: the queue of changed keys the capture triggers fill and the applier drains.

Claiming reads the queue in sequence order under the apply lock, in the batch's transaction; acknowledging deletes
the applied changes in that same transaction, after the Neo4j commit.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import psycopg

from pg2neo.transport.source import Change, ChangeBatch


class QueueState(NamedTuple):
    """How many changes wait and the age of the oldest, in seconds (0 when none waits)."""

    depth: int
    lag_seconds: float


class QueueSpan(NamedTuple):
    """The queue for `pg2neo status`: depth, age of the oldest change (None when empty), first and last seq."""

    depth: int
    lag_seconds: float | None
    oldest_seq: int | None
    newest_seq: int | None


class QueueTotals(NamedTuple):
    """Changes ever queued (the sequence's last value) and changes waiting now."""

    enqueued: int
    waiting: int


def claim_changes(conn: psycopg.Connection[Any], limit: int) -> list[Change]:
    """The first `limit` queued changes in sequence order (nothing is removed: see `ack_changes`)."""
    rows = conn.execute("SELECT seq, tbl, op, key FROM pg2neo.changes ORDER BY seq LIMIT %s", (limit,)).fetchall()
    return [change_of(r) for r in rows]


def ack_changes(conn: psycopg.Connection[Any], seqs: list[int]) -> None:
    """Remove applied changes from the queue."""
    conn.execute("DELETE FROM pg2neo.changes WHERE seq = ANY(%s)", (seqs,))


def enqueue_updates(conn: psycopg.Connection[Any], keys: list[tuple[str, tuple[str, ...]]]) -> None:
    """Queue an update of each (table, key): the applier re-reads those rows."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO pg2neo.changes (tbl, op, key) VALUES (%s, 'U', %s)", [(t, list(k)) for t, k in keys]
        )


def queue_state(conn: psycopg.Connection[Any]) -> QueueState:
    """Depth and age of the queue, from the queue itself: true whether or not batches are being applied."""
    row = conn.execute(
        "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(enqueued_at)), 0) FROM pg2neo.changes"
    ).fetchone()
    assert row is not None
    return QueueState(int(row[0]), float(row[1]))


def queue_span(conn: psycopg.Connection[Any]) -> QueueSpan:
    row = conn.execute(
        "SELECT count(*), extract(epoch FROM clock_timestamp() - min(enqueued_at)), min(seq), max(seq) "
        "FROM pg2neo.changes"
    ).fetchone()
    assert row is not None
    return QueueSpan(int(row[0]), None if row[1] is None else float(row[1]), row[2], row[3])


def queue_depth(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pg2neo.changes").fetchone()
    assert row is not None
    return int(row[0])


def queue_totals(conn: psycopg.Connection[Any]) -> QueueTotals:
    row = conn.execute(
        "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('pg2neo.changes', 'seq')::regclass), 0), "
        "(SELECT count(*) FROM pg2neo.changes)"
    ).fetchone()
    assert row is not None
    return QueueTotals(int(row[0]), int(row[1]))


def empty_queue_if_installed(conn: psycopg.Connection[Any]) -> None:
    """TRUNCATE the queue, when pg2neo is installed in this database."""
    if conn.execute("SELECT to_regclass('pg2neo.changes')").fetchone() not in (None, (None,)):
        conn.execute("TRUNCATE pg2neo.changes")


# The changes the current transaction queued itself, in order (strict mode, before it commits).
OWN_CHANGES_SQL = "SELECT seq, tbl, op, key FROM pg2neo.changes WHERE txid = pg_current_xact_id() ORDER BY seq"


def change_of(row: Any) -> Change:
    """A `Change` from a row of (seq, tbl, op, key)."""
    return Change(int(row[0]), str(row[1]), str(row[2]), None if row[3] is None else tuple(row[3]))


class OutboxSource:
    """The `pg2neo.changes` queue, read under the apply lock in the batch's REPEATABLE READ transaction."""

    name = "outbox"

    def claim(self, conn: psycopg.Connection[Any], limit: int) -> ChangeBatch | None:
        changes = claim_changes(conn, limit)
        if not changes:
            return None
        if changes[0].op == "T":
            return ChangeBatch(changes[:1], self.name)
        cut = next((i for i, c in enumerate(changes) if c.op == "T"), len(changes))
        return ChangeBatch(changes[:cut], self.name)

    def ack(self, conn: psycopg.Connection[Any], changes: list[Change]) -> None:
        ack_changes(conn, [c.seq for c in changes])
