"""The sync engine: claims batches of changes from a change source (or snapshot pages), has the apply core read,
map and write them, and acknowledges them after the Neo4j commit.

One batch at a time holds the apply lock (a PostgreSQL advisory lock, taken before the batch's REPEATABLE READ
snapshot). Under it the batch takes an epoch, reads every row it needs from that one snapshot, writes them to
Neo4j in one transaction stamped with the epoch, and only after Neo4j committed acknowledges its changes to the
source in the same PostgreSQL transaction. So:
- a crash anywhere leaves the changes queued, and the replay re-reads and re-MERGEs: idempotent;
- reads and writes are serialised with every other applier (a second `run`, `snapshot`), so Neo4j only ever moves
  forward to a newer committed state, and a late change re-reads the row instead of replaying an old image.

The rows that fail (apply/core.py) go to `pg2neo.dead_letters`; the rest lands and every change is acknowledged. A key
that is applied cleanly later (the row was fixed, or `pg2neo dlq retry`) loses its dead letter in the same
transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from neo4j import Driver

from pg2neo.apply.batch import GraphBatch, RowFailure
from pg2neo.apply.core import READ_SLICE, Applied, Applier, DeadLetter, Epoch, ReadRow
from pg2neo.apply.failures import about_the_data
from pg2neo.apply.reader import page_keys_query, page_query
from pg2neo.apply.writer import Checkpoint, GraphWriter
from pg2neo.capture.session import prepare_connection
from pg2neo.logs import event, get_logger
from pg2neo.mapping.plan import JoinTable, Mapping, NodeTable
from pg2neo.settings import ApplySettings
from pg2neo.transport.audit import AuditEntry, prune_audit, record_batch
from pg2neo.transport.dead_letters import NewDeadLetter, clear_dead_letters, record_dead_letters
from pg2neo.transport.epoch import advance_epoch, next_epoch
from pg2neo.transport.progress import read_progress, reset_progress, write_progress
from pg2neo.transport.queue import OutboxSource
from pg2neo.transport.schema import apply_lock
from pg2neo.transport.source import Change, ChangeSource

log = get_logger("engine")


@dataclass
class BatchResult:
    kind: str
    events: int
    counts: dict[str, int]
    duration: float
    first_seq: int | None = None
    last_seq: int | None = None
    dead_letters: int = 0
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SnapshotPage:
    """One page of a table, read from its own snapshot and mapped, waiting for its Neo4j write."""

    reads: list[ReadRow]
    batch: GraphBatch
    epoch: int
    last_key: list[str] | None
    full: bool
    read_seconds: float
    unreadable: list[DeadLetter] = field(default_factory=list)


class Engine:
    def __init__(
        self, pg_dsn: str, driver: Driver, mapping: Mapping, settings: ApplySettings, database: str = "neo4j"
    ) -> None:
        self.pg_dsn = pg_dsn
        self.mapping = mapping
        self.settings = settings
        self.writer = GraphWriter(driver, mapping, database)
        self.applier = Applier(mapping, self.writer, self.advance_epoch)
        self.source: ChangeSource = OutboxSource()
        self._conn: psycopg.Connection[Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None
        self._page_queries: dict[tuple[str, bool], bytes] = {}
        # Set by the retry loop before each try: the audit row records how many tries the batch took.
        self.attempts = 1

    # -- connection ---------------------------------------------------------------------------------------------
    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect("pg2neo")
        return self._conn

    def _connect(self, application_name: str) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.pg_dsn, autocommit=True, application_name=application_name)
        prepare_connection(conn)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        return conn

    def close(self) -> None:
        for conn in (self._conn, self._reader):
            if conn is not None:
                conn.close()
        self._conn = self._reader = None

    def _locked(self, work: Callable[[psycopg.Connection[Any]], BatchResult | None]) -> BatchResult | None:
        with apply_lock(self.conn) as conn, conn.transaction():
            return work(conn)

    # -- queued changes -----------------------------------------------------------------------------------------
    def apply_next(self) -> BatchResult | None:
        """Apply one batch of queued changes; None when the queue is empty."""
        return self._locked(self._apply_changes)

    def _apply_changes(self, conn: psycopg.Connection[Any]) -> BatchResult | None:
        started = time.monotonic()
        claimed = self.source.claim(conn, self.settings.batch_rows)
        if claimed is None:
            return None
        if claimed.changes[0].op == "T":
            return self._truncate(conn, claimed.changes[0], started)
        epoch = Epoch(next_epoch(conn))
        reads: list[ReadRow] = []
        not_read: list[DeadLetter] = []  # keys of unmapped tables, rows PostgreSQL cannot produce
        taken: set[tuple[str, tuple[str, ...]]] = set()
        payload_bytes = 0
        for table, keys in claimed.keys_by_table().items():
            entry = self.mapping.entry(table)
            if entry is None:
                reason = f"table `{table}` is no longer in the mapping; map it again or drop the dead letter"
                not_read += [DeadLetter(RowFailure(table, k, reason, {}), "UnmappedTable") for k in keys]
                taken.update((table, k) for k in keys)
                continue
            for at in range(0, len(keys), READ_SLICE):
                if taken and payload_bytes >= self.settings.batch_bytes:
                    break  # bounded in bytes: the other keys' changes stay queued for the next batch
                part = keys[at : at + READ_SLICE]
                read = self.applier.read(conn, entry, part)
                reads += read.rows
                not_read += read.dead
                payload_bytes += read.size
                taken.update((table, k) for k in part)
        changes = [c for c in claimed.changes if (c.table, c.key) in taken]
        checkpoint = Checkpoint(self.source.name, changes[-1].seq)
        applied = self.applier.write(reads, epoch, checkpoint)
        if not applied.checkpointed:  # after a bisection (the queue, not this checkpoint, is the record of progress)
            self.applier.checkpoint(epoch, checkpoint)
        dead = applied.dead + not_read
        self.after_neo4j_commit()
        self._dead_letter(conn, dead, changes)
        self._clear_dead_letters(conn, reads, dead)
        self.source.ack(conn, changes)
        counts = Applied(applied.batch, dead, applied.refused).counts()
        result = BatchResult(
            "changes",
            len(changes),
            counts,
            time.monotonic() - started,
            first_seq=changes[0].seq,
            last_seq=changes[-1].seq,
            dead_letters=len(dead),
        )
        self._audit(conn, result, epoch.value)
        return result

    def drain(self) -> int:
        """Apply queued batches until the queue is empty; returns the events applied."""
        applied = 0
        while (result := self.apply_next()) is not None:
            applied += result.events
        return applied

    def advance_epoch(self, high: int) -> int:
        """Move `pg2neo.epoch` past the graph's highest epoch; returns the next epoch (non-transactional)."""
        epoch = advance_epoch(self.conn, high)
        event(
            log,
            "epoch_advanced",
            logging.WARNING,
            graph_high=high,
            epoch=epoch,
            why="the graph has seen newer epochs than pg2neo.epoch (reinstall, restore, reset or a second source)",
        )
        return epoch

    def after_neo4j_commit(self) -> None:
        """Called between a batch's Neo4j commit and its queue acknowledgement; does nothing. The fault tests replace
        it in a wrapped `pg2neo run` (tests/fault_run.py) to kill the process exactly there."""

    def _truncate(self, conn: psycopg.Connection[Any], truncate: Change, started: float) -> BatchResult:
        if self.mapping.entry(truncate.table) is not None:
            self.writer.truncate(truncate.table)
        self.source.ack(conn, [truncate])
        result = BatchResult(
            "truncate",
            1,
            {truncate.table: 1},
            time.monotonic() - started,
            first_seq=truncate.seq,
            last_seq=truncate.seq,
        )
        self._audit(conn, result, None)
        return result

    def _dead_letter(self, conn: psycopg.Connection[Any], dead: list[DeadLetter], changes: list[Change]) -> None:
        if not dead:
            return
        ops = {(c.table, c.key): c.op for c in changes}
        record_dead_letters(
            conn,
            [
                NewDeadLetter(
                    d.failure.table,
                    d.failure.key,
                    ops.get((d.failure.table, d.failure.key), "U"),
                    d.error_class,
                    d.failure.reason,
                    d.failure.payload,
                )
                for d in dead
            ],
        )
        for d in dead:
            event(
                log,
                "dead_letter",
                table=d.failure.table,
                key=list(d.failure.key),
                error_class=d.error_class,
                reason=d.failure.reason[:500],
            )

    def _clear_dead_letters(self, conn: psycopg.Connection[Any], reads: list[ReadRow], dead: list[DeadLetter]) -> None:
        """Keys applied cleanly now (fixed, or retried with `pg2neo dlq retry`) are no longer dead letters."""
        failed = {(d.failure.table, d.failure.key) for d in dead}
        clear_dead_letters(conn, [(r.entry.table, r.key) for r in reads if (r.entry.table, r.key) not in failed])

    def prune_audit(self, retention_days: int) -> int:
        """Delete audit rows older than the retention; returns how many went."""
        with self.conn.transaction():
            return prune_audit(self.conn, retention_days)

    def _audit(self, conn: psycopg.Connection[Any], result: BatchResult, epoch: int | None) -> None:
        record_batch(
            conn,
            AuditEntry(
                kind=result.kind,
                duration_seconds=result.duration,
                first_seq=result.first_seq,
                last_seq=result.last_seq,
                events=result.events,
                counts=result.counts,
                attempts=self.attempts,
                outcome="applied_with_dead_letters" if result.dead_letters else "applied",
                epoch=epoch,
            ),
        )
        event(
            log,
            "batch_applied",
            kind=result.kind,
            events=result.events,
            last_seq=result.last_seq,
            ms=round(result.duration * 1000, 1),
            attempts=self.attempts,
            **{**result.counts, "dead_letters": result.dead_letters},
        )

    # -- snapshot -----------------------------------------------------------------------------------------------
    def snapshot_window(
        self,
        entry: NodeTable | JoinTable,
        keep_going: Callable[[], bool],
        on_page: Callable[[BatchResult], None],
    ) -> bool:
        """Load the next pages of one table's existing rows under one hold of the apply lock; True when it is done.

        The lock is held for at most `snapshot_hold_seconds` (then released, so that `run` gets its turn) and,
        while it is held, page N+1 is read and mapped on a second connection while page N is written to Neo4j.
        Each page still has its own snapshot and epoch, taken after the previous page's, and its progress row is
        committed only after its Neo4j commit, so the invariants are those of one page per lock hold.
        """
        with apply_lock(self.conn) as conn:
            return self._snapshot_window(conn, entry, keep_going, on_page)

    def _snapshot_window(
        self,
        conn: psycopg.Connection[Any],
        entry: NodeTable | JoinTable,
        keep_going: Callable[[], bool],
        on_page: Callable[[BatchResult], None],
    ) -> bool:
        progress = read_progress(conn, entry.table)
        if progress is not None and progress.done:
            return True
        last_key = None if progress is None else progress.last_key
        rows_done = 0 if progress is None else progress.rows_done
        release_at = time.monotonic() + self.settings.snapshot_hold_seconds
        with ThreadPoolExecutor(1, thread_name_prefix="pg2neo-snapshot-read") as reader:
            pending = reader.submit(self._read_page, entry, last_key)
            while True:
                page = pending.result()
                last_key = page.last_key or last_key
                ahead = page.full and time.monotonic() < release_at and keep_going()
                if ahead:  # read the next page while this one is written
                    pending = reader.submit(self._read_page, entry, last_key)
                started = time.monotonic()
                epoch = Epoch(page.epoch)
                applied = self.applier.write(page.reads, epoch, None, page.batch)
                dead = page.unreadable + applied.dead
                rows_done += len(page.reads) + len(page.unreadable)
                done = not page.full
                counts = Applied(applied.batch, dead, applied.refused).counts()
                with conn.transaction():
                    self._dead_letter(conn, dead, [])
                    write_progress(conn, entry.table, last_key, rows_done, done)
                    result = BatchResult(
                        "snapshot",
                        len(page.reads),
                        counts,
                        page.read_seconds + time.monotonic() - started,
                        dead_letters=len(dead),
                        done=done,
                        extra={"rows_done": rows_done},
                    )
                    self._audit(conn, result, epoch.value)
                on_page(result)
                if done or not ahead:
                    return done

    @property
    def snapshot_reader(self) -> psycopg.Connection[Any]:
        """The snapshot's second connection: it reads the next page while the apply connection's page is written."""
        if self._reader is None or self._reader.closed:
            self._reader = self._connect("pg2neo-snapshot")
        return self._reader

    def _page_query(self, entry: NodeTable | JoinTable, after: bool) -> bytes:
        """The page query, rendered once per table and form (composing it again costs CPU the writer needs)."""
        query = self._page_queries.get((entry.table, after))
        if query is None:
            query = self._page_queries[(entry.table, after)] = page_query(self.mapping, entry, after).as_bytes()
        return query

    def _read_page(self, entry: NodeTable | JoinTable, after: list[str] | None) -> SnapshotPage:
        """One page in key order from its own snapshot, with the epoch taken inside it, mapped to graph writes.

        Runs on the reader thread while the apply lock is held by the caller of `snapshot_window`."""
        started = time.monotonic()
        conn = self.snapshot_reader
        limit = self.settings.snapshot_batch_rows
        unreadable: list[DeadLetter] = []
        with conn.transaction():
            epoch = next_epoch(conn)
            params = [*(after or []), limit]
            try:
                with conn.transaction():  # a savepoint: one unreadable row must not end the page's snapshot
                    rows = [tuple(r) for r in conn.execute(self._page_query(entry, after is not None), params)]
                page_keys = [tuple(r[0]) for r in rows]
                reads = [ReadRow(entry, key, row) for key, row in zip(page_keys, rows, strict=True)]
            except Exception as exc:
                if not about_the_data(exc):
                    raise
                # some row of the page cannot be read: take the page's keys alone, then read them isolating the bad
                page_keys = [tuple(r[0]) for r in conn.execute(page_keys_query(entry, after is not None), params)]
                read = self.applier.read_isolating(conn, entry, page_keys)
                reads, unreadable = read.rows, read.dead
        return SnapshotPage(
            reads=reads,
            batch=self.applier.build(reads),
            epoch=epoch,
            last_key=list(page_keys[-1]) if page_keys else None,
            full=len(page_keys) == limit,
            read_seconds=time.monotonic() - started,
            unreadable=unreadable,
        )

    def reset_snapshot(self) -> None:
        with self.conn.transaction():
            reset_progress(self.conn)
