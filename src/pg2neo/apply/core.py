"""The apply core: keys or rows → `GraphBatch` → one Neo4j transaction, with the version guard, the epoch and the
bisection of a refused batch into dead letters. Every path that writes the graph goes through it: queue batches and
snapshot pages (apply/engine.py), strict transactions (coordinate/strict.py), `verify --since` (reads only) and
repairs (through the engine).

One row never stops a batch, whatever fails for it (`apply/failures.py` tells data failures from server failures):
a value the mapping cannot convert is a dead letter at once; a write Neo4j refuses for any reason that may be the
data's is bisected by key, each half re-built from the rows already read and written as its own Neo4j transaction,
until the offending rows are alone; a lone row is a dead letter only if a probe write then succeeds (otherwise the
servers are at fault and the failure stands). A row PostgreSQL cannot produce (a data exception in the read) is
found the same way, each read in a savepoint.

Epochs: the writer claims each against the graph's highest epoch first; when the caller's sequence is behind
(reinstall, restore, a reset, a second source) `advance_epoch` moves it past the graph's and the batch is written
again, so that the version guards never refuse a newer PostgreSQL state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pg2neo.apply.batch import BatchBuilder, GraphBatch, RowFailure, row_payload
from pg2neo.apply.failures import about_the_data
from pg2neo.apply.reader import by_keys_query
from pg2neo.apply.writer import Checkpoint, GraphWriter
from pg2neo.errors import EpochBehind, SchemaDriftError
from pg2neo.logs import event, get_logger
from pg2neo.mapping.plan import JoinTable, Mapping, NodeTable

log = get_logger("apply")

Key = tuple[str, ...]
Entry = NodeTable | JoinTable

# The error class recorded for a row the mapping cannot convert.
UNSTORABLE = "UnstorableValue"

# Keys read per query: with the byte bound checked between reads, a batch holds at most this many rows over it.
READ_SLICE = 500

SCHEMA_DRIFT: tuple[type[psycopg.Error], ...] = (
    psycopg.errors.UndefinedColumn,
    psycopg.errors.UndefinedTable,
    psycopg.errors.CannotCoerce,
    psycopg.errors.DatatypeMismatch,
)


@dataclass(frozen=True)
class ReadRow:
    """One key as read from a snapshot: its row, or None when the row is gone (a delete)."""

    entry: Entry
    key: Key
    row: tuple[Any, ...] | None
    version: int | None = None  # the row's own version, for sources whose batches span source transactions


@dataclass(frozen=True)
class DeadLetter:
    failure: RowFailure
    error_class: str


@dataclass
class Epoch:
    """A batch's epoch; moved forward when the graph has seen a newer one."""

    value: int


@dataclass
class Reads:
    """The rows read for some keys, the keys PostgreSQL could not read, and the bytes read (roughly)."""

    rows: list[ReadRow] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    size: int = 0


@dataclass(frozen=True)
class Applied:
    """What one write did: the writes that landed (merged over bisected halves), the dead letters and the rows the
    version guards refused, per label or relationship type."""

    batch: GraphBatch
    dead: list[DeadLetter]
    refused: dict[str, int]
    # Whether the caller's checkpoint went with the writes; after a bisection it did not, and the caller stores it
    # (`Applier.checkpoint`) once it has recorded the dead letters, so a checkpoint never passes an unrecorded one.
    checkpointed: bool = True

    def counts(self) -> dict[str, int]:
        """The batch's counts, with its dead letters and refused rows (logged: they should never occur)."""
        counts = self.batch.counts()
        if self.dead:
            counts["dead_letters"] = len(self.dead)
        if self.refused:
            counts["version_refused"] = sum(self.refused.values())
            event(
                log,
                "version_guard_refused",
                logging.WARNING,
                refused=self.refused,
                why="the graph holds a newer _pg2neo_version than this write; run `pg2neo verify` to see the drift",
            )
        return counts


class KeyReader:
    """Reads rows by key and maps them to graph writes (no write): the read side of the apply core, also used by
    `verify --since` and repairs to see PostgreSQL exactly as the applier sees it."""

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self.builder = BatchBuilder(mapping)
        # Rendered once: composing the SQL again for every read took ~10 % of the apply loop's CPU.
        self._by_keys = {e.table: by_keys_query(mapping, e).as_bytes() for e in mapping.entries}

    # -- reading ------------------------------------------------------------------------------------------------
    def fetch(self, cur: psycopg.Connection[Any] | psycopg.Cursor[Any], entry: Entry, keys: list[Key]) -> list[ReadRow]:
        """The current rows of `keys` in one query (a gone row is a delete); any failure stands."""
        columns = [[k[i] for k in keys] for i in range(len(entry.key_columns))]
        found = [tuple(r) for r in cur.execute(self._by_keys[entry.table], columns).fetchall()]
        present = {tuple(row[0]) for row in found}
        return [ReadRow(entry, tuple(row[0]), row) for row in found] + [
            ReadRow(entry, k, None) for k in keys if k not in present
        ]

    def read(self, conn: psycopg.Connection[Any], entry: Entry, keys: list[Key]) -> Reads:
        """The current rows of `keys` (a gone row is a delete), each slice read in a savepoint; a key PostgreSQL
        cannot read is a dead letter."""
        found, dead = self._fetch_isolating(conn, entry, keys)
        unreadable = {d.failure.key for d in dead}
        present = {tuple(row[0]) for row in found}
        rows = [ReadRow(entry, tuple(row[0]), row) for row in found]
        rows += [ReadRow(entry, k, None) for k in keys if k not in present and k not in unreadable]
        return Reads(rows, dead, sum(_approx_size(row) for row in found))

    def read_isolating(self, conn: psycopg.Connection[Any], entry: Entry, keys: list[Key]) -> Reads:
        """The rows of `keys` that PostgreSQL can read (no deletes inferred) and dead letters for the others."""
        found, dead = self._fetch_isolating(conn, entry, keys)
        return Reads([ReadRow(entry, tuple(r[0]), r) for r in found], dead, sum(_approx_size(r) for r in found))

    def _fetch_isolating(
        self, conn: psycopg.Connection[Any], entry: Entry, keys: list[Key]
    ) -> tuple[list[tuple[Any, ...]], list[DeadLetter]]:
        """The rows of `keys`, read in a savepoint; a data exception (a value PostgreSQL cannot cast or psycopg
        cannot load) bisects the keys until the unreadable ones are alone, and they become dead letters."""
        columns = [[k[i] for k in keys] for i in range(len(entry.key_columns))]
        try:
            with conn.transaction():
                return [tuple(r) for r in conn.execute(self._by_keys[entry.table], columns).fetchall()], []
        except SCHEMA_DRIFT as exc:
            raise SchemaDriftError(
                f"reading `{entry.table}` failed: {exc.diag.message_primary}. The table changed since "
                "`pg2neo init`: update the mapping if needed and run `pg2neo init` again; queued changes are kept."
            ) from exc
        except Exception as exc:
            if not about_the_data(exc):
                raise
            if len(keys) == 1:
                reason = f"PostgreSQL cannot read the row: {type(exc).__name__}: {str(exc).strip()}"
                event(log, "unreadable_row", table=entry.table, key=list(keys[0]), error=type(exc).__name__)
                return [], [DeadLetter(RowFailure(entry.table, keys[0], reason, {}), type(exc).__name__)]
            mid = len(keys) // 2
            rows, dead = self._fetch_isolating(conn, entry, keys[:mid])
            more_rows, more_dead = self._fetch_isolating(conn, entry, keys[mid:])
            return rows + more_rows, dead + more_dead

    # -- mapping ------------------------------------------------------------------------------------------------
    def build(self, reads: list[ReadRow]) -> GraphBatch:
        """The graph writes of some read keys (a whole batch, or one half of a refused one)."""
        batch = self.builder.new_batch()
        grouped: dict[str, tuple[Entry, list[ReadRow], list[ReadRow]]] = {}
        for read in reads:
            _, rows, gone = grouped.setdefault(read.entry.table, (read.entry, [], []))
            (gone if read.row is None else rows).append(read)
        for entry, rows, gone in grouped.values():
            if rows:
                self.builder.add_rows(batch, entry, [r.row for r in rows if r.row is not None], _versions(rows))
            if gone:
                self.builder.add_deletes(batch, entry, [r.key for r in gone], _versions(gone))
        return batch


class Applier(KeyReader):
    """Reads rows by key, maps them to graph writes and writes them; create one per mapping and Neo4j database.

    `advance_epoch(high)` moves the caller's epoch sequence past the graph's highest epoch and returns a new epoch;
    without it, `write` lets `EpochBehind` reach the caller."""

    def __init__(
        self, mapping: Mapping, writer: GraphWriter, advance_epoch: Callable[[int], int] | None = None
    ) -> None:
        super().__init__(mapping)
        if writer.awaiting is not None:  # rows that carry a foreign key's referenced values, not the target's key
            self.builder = BatchBuilder(mapping, by_reference=True)
        self.writer = writer
        self._advance_epoch = advance_epoch

    # -- writing ------------------------------------------------------------------------------------------------
    def write(
        self,
        reads: list[ReadRow],
        epoch: Epoch,
        checkpoint: Checkpoint | None = None,
        built: GraphBatch | None = None,
    ) -> Applied:
        """Write the rows in one Neo4j transaction; if the write fails in a way the data may cause, bisect until the
        bad rows are alone. `built` is `reads` already mapped, if the caller has it."""
        batch = built if built is not None else self.build(reads)
        try:
            refused = self._write(batch, epoch, checkpoint) if not batch.empty() or checkpoint is not None else {}
        except Exception as exc:
            if not reads or not about_the_data(exc):
                raise
            if len(reads) == 1:
                return Applied(self.builder.new_batch(), [self._refused_row(reads[0], exc)], {}, checkpoint is None)
            # The halves are written without the checkpoint: a checkpoint that is the source's only record of
            # progress (the Kafka sink's) must never cover a half not yet written, nor a dead letter not yet recorded.
            mid = len(reads) // 2
            first = self.write(reads[:mid], epoch)
            second = self.write(reads[mid:], epoch)
            refused = dict(first.refused)
            for name, count in second.refused.items():
                refused[name] = refused.get(name, 0) + count
            dead = first.dead + second.dead
            return Applied(_merged(first.batch, second.batch), dead, refused, checkpoint is None)
        return Applied(batch, [DeadLetter(f, UNSTORABLE) for f in batch.failures], refused)

    def checkpoint(self, epoch: Epoch, checkpoint: Checkpoint) -> None:
        """Store a checkpoint alone (after a bisected write, once the caller has recorded its dead letters)."""
        self._write(self.builder.new_batch(), epoch, checkpoint)

    def _write(self, batch: GraphBatch, epoch: Epoch, checkpoint: Checkpoint | None) -> dict[str, int]:
        """Write with the batch's epoch; when the graph has seen a newer epoch, move the sequence past it and write
        again with a new one (the caller holds the apply lock, so epochs keep the order of the reads)."""
        while True:
            try:
                return self.writer.write(batch, epoch.value, checkpoint)
            except EpochBehind as behind:
                if self._advance_epoch is None:
                    raise
                epoch.value = self._advance_epoch(behind.high)

    def _refused_row(self, read: ReadRow, exc: Exception) -> DeadLetter:
        """One key whose write failed: a dead letter if the servers take a write without it, else the failure stands."""
        try:
            self.writer.probe()
        except Exception as probe_failure:
            raise exc from probe_failure
        code = getattr(exc, "code", None) or type(exc).__name__
        message = getattr(exc, "message", None) or str(exc)
        payload = {} if read.row is None else row_payload(read.entry, read.row[1 : 1 + len(read.entry.columns)])
        failure = RowFailure(read.entry.table, read.key, f"Neo4j refused the row: {code}: {message}", payload)
        event(log, "neo4j_rejected_row", table=read.entry.table, key=list(read.key), code=code)
        return DeadLetter(failure, type(exc).__name__)


def _versions(reads: list[ReadRow]) -> list[int] | None:
    versions = [r.version for r in reads]
    if all(v is None for v in versions):
        return None
    return [0 if v is None else v for v in versions]


def _merged(first: GraphBatch, second: GraphBatch) -> GraphBatch:
    """The writes of two halves as one batch (for counts): lists concatenated per table."""
    for table, writes in second.nodes.items():
        into = first.nodes.setdefault(table, writes)
        if into is not writes:
            into.upserts += writes.upserts
            into.deletes += writes.deletes
            into.delete_versions += writes.delete_versions
    for table, joins in second.joins.items():
        target = first.joins.setdefault(table, joins)
        if target is not joins:
            target.upserts += joins.upserts
            target.deletes += joins.deletes
            target.delete_versions += joins.delete_versions
    return first


def _approx_size(row: tuple[Any, ...]) -> int:
    size = 0
    for value in row:
        if isinstance(value, str | bytes):
            size += len(value)
        elif isinstance(value, list):
            size += 8 * len(value)
        else:
            size += 8
    return size
