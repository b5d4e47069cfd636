"""Strict mode: one application transaction committed atomically in PostgreSQL and Neo4j (two-phase commit).

Place in the data flow: a synchronous shortcut beside capture -> queue -> apply. The application writes through
its own psycopg 3 connection; the capture triggers queue the keys as always. On exit the coordinator, still inside
that transaction:
  1. takes the apply lock as a transaction-level advisory lock (`pg_advisory_xact_lock(APPLY_LOCK_KEY)`) and an
     epoch from `pg2neo.epoch`, so the strict write is ordered with every applier batch;
  2. re-reads the rows the transaction queued (`txid = pg_current_xact_id()`) and builds a `GraphBatch`;
  3. `PREPARE TRANSACTION` with a pg2neo global id (the advisory lock passes to the prepared transaction);
  4. writes the batch and a marker `(:_Pg2neoTx {gid})` in one Neo4j transaction, with a server-side timeout
     that ends before recovery may roll the prepared transaction back, and commits it;
  5. `COMMIT PREPARED`, which also releases the apply lock.
A failure before 3 rolls PostgreSQL back and never touches Neo4j; a Neo4j failure in 4 rolls the prepared
transaction back (`StrictCommitFailed`); a crash after 3 is settled by recovery from the marker.
The queued events stay in `pg2neo.changes`: the applier re-reads those rows later under a newer epoch (idempotent).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, cast

import psycopg
from neo4j import Driver, ManagedTransaction
from neo4j.exceptions import DriverError, Neo4jError
from psycopg.abc import Params, QueryNoTemplate
from psycopg.pq import TransactionStatus

from pg2neo.apply.writer import GraphWriter
from pg2neo.capture.outbox_sql import APPLY_LOCK_KEY
from pg2neo.capture.reader import _LENIENT, by_keys_query
from pg2neo.coordinate.protocol import (
    MARKER_CREATE,
    MARKERS_AMONG,
    STRICT_COMMITS,
    STRICT_ROLLBACKS,
    StrictCommitFailed,
    StrictInDoubt,
    StrictSettings,
    check_prepared_enabled,
    new_gid,
)
from pg2neo.logs import event, get_logger
from pg2neo.mapping.ops import BatchBuilder, GraphBatch
from pg2neo.mapping.plan import Mapping

log = get_logger("strict")

StepHook = Callable[[str], None]
"""Called with the name of each step as it is reached (crash tests stop the process there)."""

STEPS = ("before_prepare", "after_prepare", "after_neo4j_commit", "after_commit_prepared")


class StrictTransaction:
    """The application's handle inside `strict_transaction`: run statements on the same connection."""

    def __init__(self, conn: psycopg.Connection[Any], gid: str) -> None:
        self.connection = conn
        self.gid = gid

    def execute(self, query: QueryNoTemplate, params: Params | None = None) -> psycopg.Cursor[Any]:
        return self.connection.execute(query, params)


class StrictCoordinator:
    """Builds strict transactions for one mapping and one Neo4j database; create once, use from many threads."""

    def __init__(
        self,
        driver: Driver,
        mapping: Mapping,
        settings: StrictSettings | None = None,
        database: str = "neo4j",
        on_step: StepHook | None = None,
    ) -> None:
        self.driver = driver
        self.mapping = mapping
        self.settings = settings or StrictSettings()
        self.database = database
        self.builder = BatchBuilder(mapping)
        self.writer = GraphWriter(driver, mapping, database)
        self._by_keys = {e.table: by_keys_query(mapping, e) for e in mapping.entries}
        self._on_step = on_step
        self._checked = False

    def _step(self, name: str) -> None:
        if self._on_step is not None:
            self._on_step(name)

    @contextmanager
    def transaction(self, conn_or_dsn: psycopg.Connection[Any] | str) -> Iterator[StrictTransaction]:
        """A strict transaction on an idle connection (or a new one to the DSN); commits both stores on exit."""
        owned = isinstance(conn_or_dsn, str)
        conn = (
            psycopg.connect(conn_or_dsn, application_name="pg2neo-strict")
            if isinstance(conn_or_dsn, str)
            else conn_or_dsn
        )
        autocommit = conn.autocommit
        try:
            if autocommit:
                conn.autocommit = False
            tx = StrictTransaction(conn, new_gid(conn.info.dbname))
            conn.tpc_begin(tx.gid)
            try:
                if not self._checked:
                    check_prepared_enabled(conn)
                    self._checked = True
                yield tx
            except BaseException:
                self._rollback(conn, tx.gid, "application")
                raise
            self._commit(conn, tx.gid)
        finally:
            if owned:
                conn.close()
            elif autocommit and not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
                conn.autocommit = True

    # -- the commit protocol ------------------------------------------------------------------------------------
    def _commit(self, conn: psycopg.Connection[Any], gid: str) -> None:
        started = time.monotonic()
        try:
            found = self._read_changes(conn, gid)
        except BaseException as exc:
            self._rollback(conn, gid, "postgresql")
            if isinstance(exc, psycopg.Error):
                raise StrictCommitFailed(
                    f"strict transaction {gid} rolled back: reading its changes failed: {exc}", gid, "postgresql"
                ) from exc
            raise
        if found is None:  # wrote nothing that is mapped: an ordinary one-phase commit
            conn.tpc_commit()
            STRICT_COMMITS.inc()
            return
        batch, epoch = found
        # Recovery may roll back a prepared transaction without marker once it is prepared_timeout old; the Neo4j
        # transaction must be dead by then, so its server-side timeout ends safety_margin earlier.
        deadline = time.monotonic() + self.settings.prepared_timeout - self.settings.safety_margin
        self._step("before_prepare")
        try:
            conn.tpc_prepare()
        except psycopg.Error as exc:
            self._rollback(conn, gid, "postgresql")
            raise StrictCommitFailed(f"strict transaction {gid}: PREPARE failed: {exc}", gid, "postgresql") from exc
        self._step("after_prepare")
        self._write_graph(conn, gid, batch, epoch, deadline)
        self._step("after_neo4j_commit")
        try:
            conn.tpc_commit()
        except psycopg.errors.UndefinedObject:
            pass  # recovery saw the marker and committed it first
        except psycopg.Error as exc:
            raise StrictInDoubt(
                f"strict transaction {gid} is committed in Neo4j but COMMIT PREPARED failed ({exc}); "
                "`pg2neo recover` will commit it in PostgreSQL",
                gid,
                "commit",
            ) from exc
        self._step("after_commit_prepared")
        STRICT_COMMITS.inc()
        event(log, "strict_committed", gid=gid, epoch=epoch, ms=round((time.monotonic() - started) * 1000, 1))

    def _read_changes(self, conn: psycopg.Connection[Any], gid: str) -> tuple[GraphBatch, int] | None:
        with conn.cursor() as cur:
            for name, loader in _LENIENT.items():
                cur.adapters.register_loader(name, loader)
            cur.execute("SET LOCAL intervalstyle = 'iso_8601'")
            cur.execute("SET LOCAL TIME ZONE 'UTC'")
            cur.execute("SELECT pg_advisory_xact_lock(%s), nextval('pg2neo.epoch')", (APPLY_LOCK_KEY,))
            epoch = int(cur.fetchone()[1])  # type: ignore[index]
            cur.execute("SELECT tbl, op, key FROM pg2neo.changes WHERE txid = pg_current_xact_id() ORDER BY seq")
            events = cur.fetchall()
            if not events:
                return None
            by_table: dict[str, dict[tuple[str, ...], None]] = {}
            for table, op, key in events:
                if op == "T":
                    raise StrictCommitFailed(
                        f"strict transaction {gid} rolled back: TRUNCATE of {table} cannot run in a strict "
                        "transaction (Neo4j empties a label in several transactions); run it as an ordinary write",
                        gid,
                        "postgresql",
                    )
                if self.mapping.entry(table) is not None:
                    by_table.setdefault(table, {})[tuple(key)] = None
            if not by_table:
                return None
            batch = self.builder.new_batch()
            for table, keys in by_table.items():
                entry = self.mapping.entry(table)
                assert entry is not None
                wanted = list(keys)
                columns = [[k[i] for k in wanted] for i in range(len(entry.key_columns))]
                rows = cur.execute(self._by_keys[table], columns).fetchall()
                self.builder.add_rows(batch, entry, rows)
                present = {tuple(row[0]) for row in rows}
                self.builder.add_deletes(batch, entry, [k for k in wanted if k not in present])
        if batch.failures:
            reasons = "; ".join(f"{f.table} {list(f.key)}: {f.reason}" for f in batch.failures[:5])
            raise StrictCommitFailed(
                f"strict transaction {gid} rolled back: Neo4j cannot store {len(batch.failures)} row(s): {reasons}",
                gid,
                "postgresql",
            )
        return batch, epoch

    def _write_graph(
        self, conn: psycopg.Connection[Any], gid: str, batch: GraphBatch, epoch: int, deadline: float
    ) -> None:
        remaining = deadline - time.monotonic()
        if remaining < 1.0:
            self._rollback(conn, gid, "neo4j")
            raise StrictCommitFailed(
                f"strict transaction {gid} rolled back: too little time left before the prepared timeout "
                f"({self.settings.prepared_timeout}s) to commit in Neo4j",
                gid,
                "neo4j",
            )
        committing = False
        try:
            with self.driver.session(database=self.database) as session:
                ntx = session.begin_transaction(timeout=remaining)
                try:
                    # the same Cypher as the applier; an explicit transaction offers the same run() as a managed one
                    self.writer._work(cast(ManagedTransaction, ntx), batch, epoch, dt.datetime.now(dt.UTC), None)
                    ntx.run(MARKER_CREATE, gid=gid, epoch=epoch).consume()
                except BaseException:
                    with suppress(Neo4jError, DriverError):
                        ntx.close()  # rolls the Neo4j transaction back
                    raise
                committing = True
                ntx.commit()
        except Neo4jError as exc:  # the server answered with an error: the Neo4j transaction did not commit
            self._rollback(conn, gid, "neo4j")
            raise StrictCommitFailed(
                f"strict transaction {gid} rolled back in PostgreSQL: the Neo4j write failed: {exc}", gid, "neo4j"
            ) from exc
        except DriverError as exc:  # no answer (server down, connection lost)
            if committing:
                self._settle_unknown_commit(conn, gid, exc)
                return
            self._rollback(conn, gid, "neo4j")
            raise StrictCommitFailed(
                f"strict transaction {gid} rolled back in PostgreSQL: Neo4j is unavailable: {exc}", gid, "neo4j"
            ) from exc
        except BaseException:
            if not committing:
                self._rollback(conn, gid, "neo4j")
            raise  # interrupted during the Neo4j commit: left prepared, recovery settles it from the marker

    def _settle_unknown_commit(self, conn: psycopg.Connection[Any], gid: str, exc: BaseException) -> None:
        """The connection to Neo4j broke during COMMIT: the marker tells whether it committed."""
        try:
            with self.driver.session(database=self.database) as session:
                present = session.run(MARKERS_AMONG, gids=[gid]).single() is not None
        except (Neo4jError, DriverError):
            present = False
        if present:
            return  # committed: the caller goes on to COMMIT PREPARED
        raise StrictInDoubt(
            f"strict transaction {gid}: the connection to Neo4j broke while committing ({exc}); it stays prepared "
            f"in PostgreSQL and `pg2neo recover` settles it (commit if Neo4j holds its marker, else roll back after "
            f"{self.settings.prepared_timeout}s)",
            gid,
            None,
        ) from exc

    def _rollback(self, conn: psycopg.Connection[Any], gid: str, stage: str) -> None:
        STRICT_ROLLBACKS.labels(stage).inc()
        event(log, "strict_rolled_back", gid=gid, stage=stage)
        if conn.closed or conn.broken:
            return  # the server ends the session's transaction; a prepared one is left to recovery
        try:
            conn.tpc_rollback()
        except psycopg.Error as exc:
            event(log, "strict_rollback_failed", gid=gid, error=str(exc))


@contextmanager
def strict_transaction(
    conn_or_dsn: psycopg.Connection[Any] | str,
    driver: Driver,
    mapping: Mapping,
    settings: StrictSettings | None = None,
    database: str = "neo4j",
) -> Iterator[StrictTransaction]:
    """One strict transaction: `with strict_transaction(conn, driver, mapping) as tx: tx.execute(sql, params)`.

    Commits the writes in PostgreSQL and their graph image in Neo4j atomically, or raises (a CoordinateError when
    the coordinator rolled back or could not settle). Reuse a `StrictCoordinator` when committing many.
    """
    with StrictCoordinator(driver, mapping, settings, database).transaction(conn_or_dsn) as tx:
        yield tx


__all__ = ["STEPS", "StrictCoordinator", "StrictTransaction", "strict_transaction"]
