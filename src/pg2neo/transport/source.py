"""The change-source seam: where changes come from, and how a source learns they are applied.

A source yields `ChangeBatch`es in order; each names the changed keys per table and its position (the last
sequence number, or a log position for another source). The engine applies a batch to Neo4j and, only after the
Neo4j commit, acknowledges it to the source inside the same PostgreSQL transaction it was claimed in, so a crash
between the two replays the batch (the writes are idempotent) and never loses it.

`OutboxSource` is the first implementation: the `pg2neo.changes` queue the capture triggers fill.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import psycopg


@dataclass(frozen=True)
class Change:
    """One captured change: a key of a table (`op` I, U, D, or T for a TRUNCATE, which has no key)."""

    seq: int
    table: str
    op: str
    key: tuple[str, ...] | None


@dataclass(frozen=True)
class ChangeBatch:
    """Changes to apply together, in source order; `position` is what a checkpoint records."""

    changes: list[Change]
    source: str

    @property
    def position(self) -> int:
        return self.changes[-1].seq

    @property
    def first(self) -> int:
        return self.changes[0].seq

    def keys_by_table(self) -> dict[str, list[tuple[str, ...]]]:
        """Each table's changed keys, once each, in first-seen order."""
        by_table: dict[str, dict[tuple[str, ...], None]] = {}
        for change in self.changes:
            assert change.key is not None
            by_table.setdefault(change.table, {})[change.key] = None
        return {table: list(keys) for table, keys in by_table.items()}


class ChangeSource(Protocol):
    """Yields batches of changes and takes their acknowledgement after the Neo4j commit."""

    name: str

    def claim(self, conn: psycopg.Connection[Any], limit: int) -> ChangeBatch | None:
        """The next batch (at most `limit` changes; a TRUNCATE alone), or None when nothing waits."""
        ...

    def ack(self, conn: psycopg.Connection[Any], changes: list[Change]) -> None:
        """Forget applied changes (in the caller's transaction, committed after the Neo4j commit)."""
        ...


class OutboxSource:
    """The `pg2neo.changes` queue, read under the apply lock in the batch's REPEATABLE READ transaction."""

    name = "outbox"

    def claim(self, conn: psycopg.Connection[Any], limit: int) -> ChangeBatch | None:
        rows = conn.execute("SELECT seq, tbl, op, key FROM pg2neo.changes ORDER BY seq LIMIT %s", (limit,)).fetchall()
        if not rows:
            return None
        changes = [Change(int(r[0]), str(r[1]), str(r[2]), None if r[3] is None else tuple(r[3])) for r in rows]
        if changes[0].op == "T":
            return ChangeBatch(changes[:1], self.name)
        cut = next((i for i, c in enumerate(changes) if c.op == "T"), len(changes))
        return ChangeBatch(changes[:cut], self.name)

    def ack(self, conn: psycopg.Connection[Any], changes: list[Change]) -> None:
        conn.execute("DELETE FROM pg2neo.changes WHERE seq = ANY(%s)", ([c.seq for c in changes],))
