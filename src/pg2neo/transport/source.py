"""The change-source seam: where changes come from, and how a source learns they are applied.

A source yields `ChangeBatch`es in order; each names the changed keys per table and its position (the last
sequence number, or a log position for another source). The engine applies a batch to Neo4j and, only after the
Neo4j commit, acknowledges it to the source inside the same PostgreSQL transaction it was claimed in, so a crash
between the two replays the batch (the writes are idempotent) and never loses it.

`queue.OutboxSource` is the first implementation: the `pg2neo.changes` queue the capture triggers fill.
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
