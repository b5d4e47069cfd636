"""The sync engine: claims queued changes (or snapshot pages), re-reads their rows, writes them to Neo4j, acks.

One batch at a time holds the apply lock (a PostgreSQL advisory lock, taken before the batch's REPEATABLE READ
snapshot). Under it the batch takes an epoch, reads every row it needs from that one snapshot, writes them to
Neo4j in one transaction stamped with the epoch, and only after Neo4j committed deletes its events from the queue
in the same PostgreSQL transaction. So:
- a crash anywhere leaves the events queued, and the replay re-reads and re-MERGEs: idempotent;
- reads and writes are serialised with every other applier (a second `run`, `snapshot`), so Neo4j only ever moves
  forward to a newer committed state, and a late event re-reads the row instead of replaying an old image.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from neo4j import Driver

from pg2neo.apply.writer import GraphWriter
from pg2neo.capture.outbox_sql import APPLY_LOCK_KEY
from pg2neo.capture.reader import by_keys_query, page_query, prepare_connection
from pg2neo.errors import SchemaDriftError
from pg2neo.logs import event, get_logger
from pg2neo.mapping.ops import BatchBuilder, GraphBatch, RowFailure
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

    # -- connection ---------------------------------------------------------------------------------------------
    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.pg_dsn, autocommit=True, application_name="pg2neo")
            prepare_connection(conn)
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _locked(self, work: Callable[[psycopg.Connection[Any]], BatchResult | None]) -> BatchResult | None:
        conn = self.conn
        conn.execute("SELECT pg_advisory_lock(%s)", (APPLY_LOCK_KEY,))
        try:
            with conn.transaction():
                return work(conn)
        finally:
            if not conn.closed and not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", (APPLY_LOCK_KEY,))

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
        epoch = int(conn.execute("SELECT nextval('pg2neo.epoch')").fetchone()[0])  # type: ignore[index]

        by_table: dict[str, dict[tuple[str, ...], None]] = {}
        for e in events:
            assert e.key is not None
            by_table.setdefault(e.table, {})[e.key] = None
        batch = self.builder.new_batch()
        unmapped: list[RowFailure] = []
        taken: set[str] = set()
        payload_bytes = 0
        for table, keys in by_table.items():
            if taken and payload_bytes >= self.settings.batch_bytes:
                break  # bounded in bytes: the other tables' events stay queued for the next batch
            taken.add(table)
            entry = self.mapping.entry(table)
            if entry is None:
                reason = f"table `{table}` is no longer in the mapping; map it again or drop the dead letter"
                unmapped += [RowFailure(table, k, reason, {}) for k in keys]
                continue
            payload_bytes += self._read_keys(conn, batch, entry, list(keys))
        events = [e for e in events if e.table in taken]
        batch.failures += unmapped
        self.writer.write(batch, epoch, ("outbox", events[-1].seq))
        self._dead_letter(conn, batch.failures, events)
        conn.execute("DELETE FROM pg2neo.changes WHERE seq = ANY(%s)", ([e.seq for e in events],))
        result = BatchResult(
            "changes",
            len(events),
            batch.counts(),
            time.monotonic() - started,
            first_seq=events[0].seq,
            last_seq=events[-1].seq,
            dead_letters=len(batch.failures),
        )
        self._audit(conn, result, epoch)
        return result

    def _read_keys(
        self,
        conn: psycopg.Connection[Any],
        batch: GraphBatch,
        entry: NodeTable | JoinTable,
        keys: list[tuple[str, ...]],
    ) -> int:
        columns = [[k[i] for k in keys] for i in range(len(entry.key_columns))]
        try:
            found = conn.execute(self._by_keys[entry.table], columns).fetchall()
        except (
            psycopg.errors.UndefinedColumn,
            psycopg.errors.UndefinedTable,
            psycopg.errors.CannotCoerce,
            psycopg.errors.DatatypeMismatch,
        ) as exc:
            raise SchemaDriftError(
                f"reading `{entry.table}` failed: {exc.diag.message_primary}. The table changed since "
                "`pg2neo init`: update the mapping if needed and run `pg2neo init` again; queued changes are kept."
            ) from exc
        self.builder.add_rows(batch, entry, found)
        present = {tuple(row[0]) for row in found}
        self.builder.add_deletes(batch, entry, [k for k in keys if k not in present])
        return sum(_approx_size(row) for row in found)

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

    def _dead_letter(self, conn: psycopg.Connection[Any], failures: list[RowFailure], events: list[Event]) -> None:
        if not failures:
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
                        f.table,
                        list(f.key),
                        ops.get((f.table, f.key), "U"),
                        "UnstorableValue",
                        f.reason,
                        json.dumps(f.payload),
                    )
                    for f in failures
                ],
            )
        for f in failures:
            event(log, "dead_letter", table=f.table, key=list(f.key), reason=f.reason)

    def _audit(self, conn: psycopg.Connection[Any], result: BatchResult, epoch: int | None) -> None:
        conn.execute(
            "INSERT INTO pg2neo.audit (kind, started_at, first_seq, last_seq, events, counts, duration_ms, outcome, "
            "epoch) VALUES (%s, clock_timestamp() - make_interval(secs => %s), %s, %s, %s, %s, %s, 'applied', %s)",
            (
                result.kind,
                result.duration,
                result.first_seq,
                result.last_seq,
                result.events,
                json.dumps(result.counts),
                result.duration * 1000,
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
            **result.counts,
        )

    # -- snapshot -----------------------------------------------------------------------------------------------
    def snapshot_page(self, entry: NodeTable | JoinTable) -> BatchResult | None:
        """Load the next page of one table's existing rows; None when the table is done."""
        return self._locked(lambda conn: self._snapshot_page(conn, entry))

    def _snapshot_page(self, conn: psycopg.Connection[Any], entry: NodeTable | JoinTable) -> BatchResult | None:
        started = time.monotonic()
        progress = conn.execute(
            "SELECT last_key, rows_done, done FROM pg2neo.snapshot_progress WHERE tbl = %s", (entry.table,)
        ).fetchone()
        if progress is not None and progress[2]:
            return None
        last_key = None if progress is None else progress[0]
        rows_done = 0 if progress is None else int(progress[1])
        epoch = int(conn.execute("SELECT nextval('pg2neo.epoch')").fetchone()[0])  # type: ignore[index]
        limit = self.settings.snapshot_batch_rows
        query = page_query(self.mapping, entry, after=last_key is not None)
        params = [*(last_key or []), limit]
        rows = conn.execute(query, params).fetchall()
        batch = self.builder.new_batch()
        self.builder.add_rows(batch, entry, rows)
        if rows:
            self.writer.write(batch, epoch)
        self._dead_letter(conn, batch.failures, [])
        done = len(rows) < limit
        conn.execute(
            "INSERT INTO pg2neo.snapshot_progress (tbl, last_key, rows_done, done, finished_at) "
            "VALUES (%s, %s, %s, %s, CASE WHEN %s THEN now() END) ON CONFLICT (tbl) DO UPDATE SET "
            "last_key = EXCLUDED.last_key, rows_done = EXCLUDED.rows_done, done = EXCLUDED.done, "
            "finished_at = EXCLUDED.finished_at",
            (entry.table, list(rows[-1][0]) if rows else last_key, rows_done + len(rows), done, done),
        )
        result = BatchResult(
            "snapshot",
            len(rows),
            batch.counts(),
            time.monotonic() - started,
            dead_letters=len(batch.failures),
            done=done,
            extra={"rows_done": rows_done + len(rows)},
        )
        self._audit(conn, result, epoch)
        return result

    def reset_snapshot(self) -> None:
        with self.conn.transaction():
            self.conn.execute("DELETE FROM pg2neo.snapshot_progress")


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
