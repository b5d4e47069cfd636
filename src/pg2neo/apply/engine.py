"""The sync engine: claims queued changes (or snapshot pages), re-reads their rows, writes them to Neo4j, acks.

One batch at a time holds the apply lock (a PostgreSQL advisory lock, taken before the batch's REPEATABLE READ
snapshot). Under it the batch takes an epoch, reads every row it needs from that one snapshot, writes them to
Neo4j in one transaction stamped with the epoch, and only after Neo4j committed deletes its events from the queue
in the same PostgreSQL transaction. So:
- a crash anywhere leaves the events queued, and the replay re-reads and re-MERGEs: idempotent;
- reads and writes are serialised with every other applier (a second `run`, `snapshot`), so Neo4j only ever moves
  forward to a newer committed state, and a late event re-reads the row instead of replaying an old image.

One row never stops the queue, whatever fails for it (`apply/failures.py` tells data failures from server
failures): a value the mapping cannot convert is a dead letter at once; a write Neo4j refuses for any reason that may
be the data's (a `ClientError`, a `DatabaseError` such as a key too large to index, a value the driver cannot pack) is
bisected by key, each half re-built from the rows already read and written as its own Neo4j transaction (all inside
the one PostgreSQL transaction), until the offending rows are alone; a lone row is a dead letter only if a probe
write then succeeds (otherwise the servers are at fault and the batch is retried). A row PostgreSQL cannot produce
(a data exception in the read) is found the same way, each read in a savepoint. Only the offending rows go to
`pg2neo.dead_letters`; the rest lands and every event is acked. A key that is applied cleanly later (the row was
fixed, or `pg2neo dlq retry`) loses its dead letter in the same transaction.

Epochs come from `pg2neo.epoch`; the writer claims each one against the graph's highest epoch first, and when the
sequence is behind (reinstall, restore, a reset, a second source) the engine moves it past the graph's and writes
again, so that the version guards never refuse a newer PostgreSQL state.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from neo4j import Driver

from pg2neo.apply.batch import BatchBuilder, GraphBatch, RowFailure, row_payload
from pg2neo.apply.failures import about_the_data
from pg2neo.apply.reader import by_keys_query, page_keys_query, page_query
from pg2neo.apply.writer import GraphWriter
from pg2neo.capture.outbox_sql import APPLY_LOCK_KEY
from pg2neo.capture.session import prepare_connection
from pg2neo.errors import EpochBehind, SchemaDriftError
from pg2neo.logs import event, get_logger
from pg2neo.mapping.plan import JoinTable, Mapping, NodeTable
from pg2neo.settings import ApplySettings

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
class Event:
    seq: int
    table: str
    op: str
    key: tuple[str, ...] | None


@dataclass(frozen=True)
class ReadRow:
    """One key of a batch as read from the batch's snapshot: its row, or None when the row is gone (a delete)."""

    entry: NodeTable | JoinTable
    key: tuple[str, ...]
    row: tuple[Any, ...] | None


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


@dataclass(frozen=True)
class DeadLetter:
    failure: RowFailure
    error_class: str


@dataclass
class Epoch:
    """A batch's epoch; moved forward when the graph has seen a newer one (see `Engine._write`)."""

    value: int


UNSTORABLE = "UnstorableValue"


class Engine:
    def __init__(
        self, pg_dsn: str, driver: Driver, mapping: Mapping, settings: ApplySettings, database: str = "neo4j"
    ) -> None:
        self.pg_dsn = pg_dsn
        self.mapping = mapping
        self.settings = settings
        self.builder = BatchBuilder(mapping)
        self.writer = GraphWriter(driver, mapping, database)
        self._by_keys = {e.table: by_keys_query(mapping, e) for e in mapping.entries}
        self._conn: psycopg.Connection[Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None
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

    @contextmanager
    def _apply_lock(self) -> Iterator[psycopg.Connection[Any]]:
        """Hold the apply lock (a session advisory lock on `conn`, taken before any snapshot) for the block."""
        conn = self.conn
        conn.execute("SELECT pg_advisory_lock(%s)", (APPLY_LOCK_KEY,))
        try:
            yield conn
        finally:
            if not conn.closed and not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", (APPLY_LOCK_KEY,))

    def _locked(self, work: Callable[[psycopg.Connection[Any]], BatchResult | None]) -> BatchResult | None:
        with self._apply_lock() as conn, conn.transaction():
            return work(conn)

    # -- queued changes -----------------------------------------------------------------------------------------
    def apply_next(self) -> BatchResult | None:
        """Apply one batch of queued changes; None when the queue is empty."""
        return self._locked(self._apply_changes)

    def _apply_changes(self, conn: psycopg.Connection[Any]) -> BatchResult | None:
        started = time.monotonic()
        rows = conn.execute(
            "SELECT seq, tbl, op, key FROM pg2neo.changes ORDER BY seq LIMIT %s", (self.settings.batch_rows,)
        ).fetchall()
        if not rows:
            return None
        events = [Event(int(r[0]), str(r[1]), str(r[2]), None if r[3] is None else tuple(r[3])) for r in rows]
        if events[0].op == "T":
            return self._truncate(conn, events[0], started)
        cut = next((i for i, e in enumerate(events) if e.op == "T"), len(events))
        events = events[:cut]
        epoch = Epoch(_next_epoch(conn))

        by_table: dict[str, dict[tuple[str, ...], None]] = {}
        for e in events:
            assert e.key is not None
            by_table.setdefault(e.table, {})[e.key] = None
        reads: list[ReadRow] = []
        not_read: list[DeadLetter] = []  # keys of unmapped tables, rows PostgreSQL cannot produce
        taken: set[tuple[str, tuple[str, ...]]] = set()
        payload_bytes = 0
        for table, keys in by_table.items():
            entry = self.mapping.entry(table)
            if entry is None:
                reason = f"table `{table}` is no longer in the mapping; map it again or drop the dead letter"
                not_read += [DeadLetter(RowFailure(table, k, reason, {}), "UnmappedTable") for k in keys]
                taken.update((table, k) for k in keys)
                continue
            wanted = list(keys)
            for at in range(0, len(wanted), READ_SLICE):
                if taken and payload_bytes >= self.settings.batch_bytes:
                    break  # bounded in bytes: the other keys' events stay queued for the next batch
                part = wanted[at : at + READ_SLICE]
                payload_bytes += self._read_keys(conn, reads, not_read, entry, part)
                taken.update((table, k) for k in part)
        events = [e for e in events if (e.table, e.key) in taken]
        batch, dead, refused = self._write_isolating(reads, epoch, ("outbox", events[-1].seq))
        dead += not_read
        self.after_neo4j_commit()
        self._dead_letter(conn, dead, events)
        self._clear_dead_letters(conn, reads, dead)
        conn.execute("DELETE FROM pg2neo.changes WHERE seq = ANY(%s)", ([e.seq for e in events],))
        counts = batch.counts()
        if dead:
            counts["dead_letters"] = len(dead)
        _note_refused(counts, refused)
        result = BatchResult(
            "changes",
            len(events),
            counts,
            time.monotonic() - started,
            first_seq=events[0].seq,
            last_seq=events[-1].seq,
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

    def _build(self, reads: list[ReadRow]) -> GraphBatch:
        """The graph writes of some read keys (the whole batch, or one half of a failed one)."""
        batch = self.builder.new_batch()
        grouped: dict[str, tuple[NodeTable | JoinTable, list[tuple[Any, ...]], list[tuple[str, ...]]]] = {}
        for read in reads:
            _, rows, gone = grouped.setdefault(read.entry.table, (read.entry, [], []))
            if read.row is None:
                gone.append(read.key)
            else:
                rows.append(read.row)
        for entry, rows, gone in grouped.values():
            if rows:
                self.builder.add_rows(batch, entry, rows)
            if gone:
                self.builder.add_deletes(batch, entry, gone)
        return batch

    def _write_isolating(
        self,
        reads: list[ReadRow],
        epoch: Epoch,
        checkpoint: tuple[str, int] | None,
        built: GraphBatch | None = None,
    ) -> tuple[GraphBatch, list[DeadLetter], dict[str, int]]:
        """Write the keys in one Neo4j transaction; if the write fails in a way the data may cause, bisect until the
        bad keys are alone.

        Returns what was written (merged over the halves), the dead letters (rows that cannot be converted and single
        keys whose write failed while the servers were fine) and the rows the version guards refused. `built` is
        `reads` already mapped, if the caller has it.
        """
        batch = built if built is not None else self._build(reads)
        try:
            refused = self._write(batch, epoch, checkpoint) if not batch.empty() or checkpoint is not None else {}
        except Exception as exc:
            if not reads or not about_the_data(exc):
                raise
            if len(reads) == 1:
                return self.builder.new_batch(), [self._refused_row(reads[0], exc)], {}
            mid = len(reads) // 2
            first, dead, refused = self._write_isolating(reads[:mid], epoch, checkpoint)
            second, more, refused_more = self._write_isolating(reads[mid:], epoch, checkpoint)
            for name, count in refused_more.items():
                refused[name] = refused.get(name, 0) + count
            return _merged(first, second), dead + more, refused
        return batch, [DeadLetter(f, UNSTORABLE) for f in batch.failures], refused

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

    def _write(self, batch: GraphBatch, epoch: Epoch, checkpoint: tuple[str, int] | None) -> dict[str, int]:
        """Write with the batch's epoch; when the graph has seen a newer epoch, move `pg2neo.epoch` past it and write
        again with a new one (still under the apply lock, so epochs keep the order of the reads)."""
        while True:
            try:
                return self.writer.write(batch, epoch.value, checkpoint)
            except EpochBehind as behind:
                epoch.value = self.advance_epoch(behind.high)

    def advance_epoch(self, high: int) -> int:
        """Move `pg2neo.epoch` past the graph's highest epoch; returns the next epoch (non-transactional)."""
        row = self.conn.execute("SELECT setval('pg2neo.epoch', %s), nextval('pg2neo.epoch')", (high,)).fetchone()
        assert row is not None
        event(
            log,
            "epoch_advanced",
            logging.WARNING,
            graph_high=high,
            epoch=int(row[1]),
            why="the graph has seen newer epochs than pg2neo.epoch (reinstall, restore, reset or a second source)",
        )
        return int(row[1])

    def after_neo4j_commit(self) -> None:
        """Called between a batch's Neo4j commit and its queue acknowledgement; does nothing. The fault tests replace
        it in a wrapped `pg2neo run` (tests/fault_run.py) to kill the process exactly there."""

    def _read_keys(
        self,
        conn: psycopg.Connection[Any],
        reads: list[ReadRow],
        dead: list[DeadLetter],
        entry: NodeTable | JoinTable,
        keys: list[tuple[str, ...]],
    ) -> int:
        """Read `keys`' current rows into `reads` (a gone row is a delete); a key PostgreSQL cannot read goes to
        `dead`. Returns the bytes read, roughly."""
        found, failed = self._fetch_isolating(conn, entry, keys)
        dead += failed
        unreadable = {d.failure.key for d in failed}
        present = {tuple(row[0]) for row in found}
        reads += [ReadRow(entry, tuple(row[0]), tuple(row)) for row in found]
        reads += [ReadRow(entry, k, None) for k in keys if k not in present and k not in unreadable]
        return sum(_approx_size(row) for row in found)

    def _fetch_isolating(
        self, conn: psycopg.Connection[Any], entry: NodeTable | JoinTable, keys: list[tuple[str, ...]]
    ) -> tuple[list[tuple[Any, ...]], list[DeadLetter]]:
        """The rows of `keys`, each read in a savepoint; a data exception (a value PostgreSQL cannot cast or psycopg
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

    def _truncate(self, conn: psycopg.Connection[Any], truncate: Event, started: float) -> BatchResult:
        if self.mapping.entry(truncate.table) is not None:
            self.writer.truncate(truncate.table)
        conn.execute("DELETE FROM pg2neo.changes WHERE seq = %s", (truncate.seq,))
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

    def _dead_letter(self, conn: psycopg.Connection[Any], dead: list[DeadLetter], events: list[Event]) -> None:
        if not dead:
            return
        ops = {(e.table, e.key): e.op for e in events}
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO pg2neo.dead_letters AS d (tbl, key, op, error_class, message, payload) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tbl, key) DO UPDATE SET "
                "attempts = d.attempts + 1, last_failed_at = now(), message = EXCLUDED.message, "
                "error_class = EXCLUDED.error_class, payload = EXCLUDED.payload, op = EXCLUDED.op",
                [
                    (
                        d.failure.table,
                        list(d.failure.key),
                        ops.get((d.failure.table, d.failure.key), "U"),
                        d.error_class,
                        d.failure.reason,
                        json.dumps(d.failure.payload, default=str),
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
        applied = [[r.entry.table, list(r.key)] for r in reads if (r.entry.table, r.key) not in failed]
        if not applied:
            return
        conn.execute(
            "DELETE FROM pg2neo.dead_letters d USING jsonb_array_elements(%s::jsonb) AS a(k) "
            "WHERE d.tbl = a.k ->> 0 AND d.key = ARRAY(SELECT jsonb_array_elements_text(a.k -> 1))",
            (json.dumps(applied),),
        )

    def prune_audit(self, retention_days: int) -> int:
        """Delete audit rows older than the retention; returns how many went."""
        with self.conn.transaction():
            cur = self.conn.execute(
                "DELETE FROM pg2neo.audit WHERE finished_at < now() - make_interval(days => %s)", (retention_days,)
            )
            return cur.rowcount

    def _audit(self, conn: psycopg.Connection[Any], result: BatchResult, epoch: int | None) -> None:
        conn.execute(
            "INSERT INTO pg2neo.audit (kind, started_at, first_seq, last_seq, events, counts, duration_ms, attempts, "
            "outcome, epoch) "
            "VALUES (%s, clock_timestamp() - make_interval(secs => %s), %s, %s, %s, %s::jsonb || " + QUEUE_AFTER + ", "
            "%s, %s, %s, %s)",
            (
                result.kind,
                result.duration,
                result.first_seq,
                result.last_seq,
                result.events,
                json.dumps(result.counts),
                result.duration * 1000,
                self.attempts,
                "applied_with_dead_letters" if result.dead_letters else "applied",
                epoch,
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
        with self._apply_lock() as conn:
            return self._snapshot_window(conn, entry, keep_going, on_page)

    def _snapshot_window(
        self,
        conn: psycopg.Connection[Any],
        entry: NodeTable | JoinTable,
        keep_going: Callable[[], bool],
        on_page: Callable[[BatchResult], None],
    ) -> bool:
        progress = conn.execute(
            "SELECT last_key, rows_done, done FROM pg2neo.snapshot_progress WHERE tbl = %s", (entry.table,)
        ).fetchone()
        if progress is not None and progress[2]:
            return True
        last_key: list[str] | None = None if progress is None else progress[0]
        rows_done = 0 if progress is None else int(progress[1])
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
                batch, dead, refused = self._write_isolating(page.reads, epoch, None, page.batch)
                dead = page.unreadable + dead
                rows_done += len(page.reads) + len(page.unreadable)
                done = not page.full
                counts = batch.counts()
                _note_refused(counts, refused)
                with conn.transaction():
                    self._dead_letter(conn, dead, [])
                    conn.execute(
                        "INSERT INTO pg2neo.snapshot_progress (tbl, last_key, rows_done, done, finished_at) "
                        "VALUES (%s, %s, %s, %s, CASE WHEN %s THEN now() END) ON CONFLICT (tbl) DO UPDATE SET "
                        "last_key = EXCLUDED.last_key, rows_done = EXCLUDED.rows_done, done = EXCLUDED.done, "
                        "finished_at = EXCLUDED.finished_at",
                        (entry.table, last_key, rows_done, done, done),
                    )
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

    def _read_page(self, entry: NodeTable | JoinTable, after: list[str] | None) -> SnapshotPage:
        """One page in key order from its own snapshot, with the epoch taken inside it, mapped to graph writes.

        Runs on the reader thread while the apply lock is held by the caller of `snapshot_window`."""
        started = time.monotonic()
        conn = self.snapshot_reader
        limit = self.settings.snapshot_batch_rows
        unreadable: list[DeadLetter] = []
        with conn.transaction():
            epoch = _next_epoch(conn)
            params = [*(after or []), limit]
            try:
                with conn.transaction():  # a savepoint: one unreadable row must not end the page's snapshot
                    rows = [tuple(r) for r in conn.execute(page_query(self.mapping, entry, after is not None), params)]
                page_keys = [tuple(r[0]) for r in rows]
            except Exception as exc:
                if not about_the_data(exc):
                    raise
                # some row of the page cannot be read: take the page's keys alone, then read them isolating the bad
                page_keys = [tuple(r[0]) for r in conn.execute(page_keys_query(entry, after is not None), params)]
                rows, unreadable = self._fetch_isolating(conn, entry, page_keys)
        reads = [ReadRow(entry, tuple(r[0]), r) for r in rows]
        return SnapshotPage(
            reads=reads,
            batch=self._build(reads),
            epoch=epoch,
            last_key=list(page_keys[-1]) if page_keys else None,
            full=len(page_keys) == limit,
            read_seconds=time.monotonic() - started,
            unreadable=unreadable,
        )

    def reset_snapshot(self) -> None:
        with self.conn.transaction():
            self.conn.execute("DELETE FROM pg2neo.snapshot_progress")


# The queue a batch leaves behind, recorded in its audit row so that the console can chart depth and lag over the last
# hour. Index lookups, not a count: the depth is the span of the waiting sequence numbers, exact while the queue drains
# in order, an upper bound when a batch left gaps (a byte-bounded batch, a TRUNCATE applied alone).
QUEUE_AFTER = (
    "(SELECT jsonb_build_object('queue_depth', coalesce(max(seq) - min(seq) + 1, 0), 'lag_seconds', "
    "coalesce(extract(epoch FROM clock_timestamp() - (SELECT enqueued_at FROM pg2neo.changes ORDER BY seq LIMIT 1)), "
    "0)) FROM pg2neo.changes)"
)


def _next_epoch(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT nextval('pg2neo.epoch')").fetchone()
    assert row is not None
    return int(row[0])


def _note_refused(counts: dict[str, int], refused: dict[str, int]) -> None:
    """Rows the version guards refused are not applied: say so (with the epoch node they should never occur)."""
    if not refused:
        return
    counts["version_refused"] = sum(refused.values())
    event(
        log,
        "version_guard_refused",
        logging.WARNING,
        refused=refused,
        why="the graph holds a newer _pg2neo_version than this write; run `pg2neo verify` to see the drift",
    )


SCHEMA_DRIFT: tuple[type[psycopg.Error], ...] = (
    psycopg.errors.UndefinedColumn,
    psycopg.errors.UndefinedTable,
    psycopg.errors.CannotCoerce,
    psycopg.errors.DatatypeMismatch,
)


def _merged(first: GraphBatch, second: GraphBatch) -> GraphBatch:
    """The writes of two halves as one batch (for counts): lists concatenated per table."""
    for table, writes in second.nodes.items():
        into = first.nodes.setdefault(table, writes)
        if into is not writes:
            into.upserts += writes.upserts
            into.deletes += writes.deletes
    for table, joins in second.joins.items():
        target = first.joins.setdefault(table, joins)
        if target is not joins:
            target.upserts += joins.upserts
            target.deletes += joins.deletes
    return first


# Keys read per query: with the byte bound checked between reads, a batch holds at most this many rows over it.
READ_SLICE = 500


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
