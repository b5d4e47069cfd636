"""Strict mode: one application transaction committed atomically in PostgreSQL and Neo4j (two-phase commit).

Place in the data flow: a synchronous shortcut beside capture -> queue -> apply. The application writes through
its own psycopg 3 connection; the capture triggers queue the keys as always. On exit the coordinator, still inside
that transaction:
  1. takes the apply lock as a transaction-level advisory lock (`pg_advisory_xact_lock(APPLY_LOCK_KEY)`) and an
     epoch from `pg2neo.epoch`, so the strict write is ordered with every applier batch, and reads the changes the
     transaction queued (`txid = pg_current_xact_id()`): one round trip (coordinate/read.py);
  2. re-reads their rows, every table's in one more round trip, and builds a `GraphBatch`;
  3. opens one Neo4j transaction (server-side timeout) and writes in it, uncommitted, first the marker
     `(:_Pg2neoTx {gid})` (unique: from now on it holds the gid against recovery's veto), then the batch, both in
     one statement (coordinate/write.py) sent with the BEGIN: one round trip;
  4. `PREPARE TRANSACTION` with that pg2neo global id (the advisory lock passes to the prepared transaction);
  5. commits the Neo4j transaction: the decision;
  6. `COMMIT PREPARED`, which also releases the apply lock.
A failure before 4 rolls both back (Neo4j never committed anything); a Neo4j refusal in 5 rolls the prepared
transaction back (`StrictCommitFailed`); a crash after 4 is settled by recovery from the marker (or its veto).
The queued events stay in `pg2neo.changes`: the applier re-reads those rows later under a newer epoch (idempotent).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from neo4j import Driver, Session, Transaction
from neo4j.exceptions import DriverError, Neo4jError
from psycopg import sql
from psycopg.abc import Params, QueryNoTemplate
from psycopg.pq import TransactionStatus

from pg2neo.apply.batch import GraphBatch
from pg2neo.apply.core import Applier, Entry, Key
from pg2neo.apply.cypher import MARKER_CONSTRAINT, MARKER_CREATE, MARKERS_AMONG
from pg2neo.apply.writer import GraphWriter
from pg2neo.coordinate.protocol import (
    STRICT_COMMITS,
    STRICT_ROLLBACKS,
    StrictCommitFailed,
    StrictInDoubt,
    StrictSettings,
    check_prepared_enabled,
    new_gid,
)
from pg2neo.coordinate.read import RowReader, lock_epoch_and_own_changes
from pg2neo.coordinate.write import strict_write
from pg2neo.errors import CoordinateError, EpochBehind
from pg2neo.logs import event, get_logger
from pg2neo.mapping.plan import Mapping
from pg2neo.transport.epoch import advance_epoch
from pg2neo.transport.source import ChangeBatch

log = get_logger("strict")

StepHook = Callable[[str], None]
"""Called with the name of each step as it is reached (crash tests stop the process there)."""

STEPS = (
    "after_read",
    "before_prepare",
    "after_prepare",
    "after_neo4j_commit",
    "after_commit_prepared",
)


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
        self.writer = GraphWriter(driver, mapping, database)
        # reads and maps; the write goes through `writer.write_in` in the explicit transaction of `_write_graph`
        self.applier = Applier(mapping, self.writer)
        self.rows = RowReader(mapping)
        self._on_step = on_step
        self._checked = False
        self._marker_schema = False

    def _step(self, name: str) -> None:
        if self._on_step is not None:
            self._on_step(name)

    @contextmanager
    def transaction(self, conn_or_dsn: psycopg.Connection[Any] | str) -> Iterator[StrictTransaction]:
        """A strict transaction on an idle connection (or a new one to the DSN); commits both stores on exit.

        The statements BEGIN / PREPARE TRANSACTION / COMMIT PREPARED are sent on the connection in autocommit mode
        rather than through psycopg's tpc_* methods: when PREPARE itself fails (a deferred constraint, a temporary
        table, no free prepared-transaction slot) the server has already rolled back, but psycopg keeps the
        connection in its prepared two-phase state, and the application's commit()/rollback() then raise.
        """
        owned = isinstance(conn_or_dsn, str)
        conn = (
            psycopg.connect(conn_or_dsn, application_name="pg2neo-strict")
            if isinstance(conn_or_dsn, str)
            else conn_or_dsn
        )
        autocommit = conn.autocommit
        try:
            if conn.info.transaction_status != TransactionStatus.IDLE:
                raise CoordinateError("strict transaction: the connection is inside a transaction; commit it first")
            conn.autocommit = True
            if not self._checked:
                check_prepared_enabled(conn)
                self._checked = True
            tx = StrictTransaction(conn, new_gid(conn.info.dbname))
            conn.execute(_begin_statement(conn))
            try:
                yield tx
            except BaseException:
                self._rollback(conn, tx.gid, "application", prepared=False)
                raise
            self._commit(conn, tx.gid)
        finally:
            if owned:
                conn.close()
            elif not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
                conn.autocommit = autocommit

    # -- the commit protocol ------------------------------------------------------------------------------------
    def _commit(self, conn: psycopg.Connection[Any], gid: str) -> None:
        started = time.monotonic()
        try:
            found = self._read_changes(conn, gid)
        except BaseException as exc:
            self._rollback(conn, gid, "postgresql", prepared=False)
            if isinstance(exc, psycopg.Error):
                raise StrictCommitFailed(
                    f"strict transaction {gid} rolled back: reading its changes failed: {exc}",
                    gid,
                    "postgresql",
                ) from exc
            raise
        if found is None:  # wrote nothing that is mapped: an ordinary one-phase commit
            conn.execute("COMMIT")
            STRICT_COMMITS.inc()
            return
        batch, epoch = found
        self._step("after_read")
        deadline = time.monotonic() + self.settings.prepared_timeout - self.settings.safety_margin
        with self.driver.session(database=self.database) as session:
            ntx = self._write_graph(conn, session, gid, batch, epoch, deadline)
            try:
                self._step("before_prepare")
                try:
                    conn.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))
                except psycopg.Error as exc:
                    # the server has rolled the transaction back already (PREPARE failing is a ROLLBACK)
                    STRICT_ROLLBACKS.labels("postgresql").inc()
                    raise StrictCommitFailed(
                        f"strict transaction {gid}: PREPARE failed: {exc}",
                        gid,
                        "postgresql",
                    ) from exc
                self._step("after_prepare")
                self._commit_graph(conn, gid, ntx)
            finally:
                with suppress(Neo4jError, DriverError, OSError):
                    ntx.close()  # no-op after a commit; else rolls the Neo4j transaction back
        self._step("after_neo4j_commit")
        try:
            conn.execute(sql.SQL("COMMIT PREPARED {}").format(sql.Literal(gid)))
        except (psycopg.errors.UndefinedObject, psycopg.errors.ObjectNotInPrerequisiteState):
            pass  # recovery saw the marker and committed it first (or is committing it: "busy")
        except psycopg.Error as exc:
            raise StrictInDoubt(
                f"strict transaction {gid} is committed in Neo4j but COMMIT PREPARED failed ({exc}); "
                "`pg2neo recover` will commit it in PostgreSQL",
                gid,
                "commit",
            ) from exc
        self._step("after_commit_prepared")
        STRICT_COMMITS.inc()
        event(
            log,
            "strict_committed",
            gid=gid,
            epoch=epoch,
            ms=round((time.monotonic() - started) * 1000, 1),
        )

    def _read_changes(self, conn: psycopg.Connection[Any], gid: str) -> tuple[GraphBatch, int] | None:
        # two round trips (coordinate/read.py): the settings that decide how a key prints as text, pinned as the
        # triggers and the applier have them (under the application's own DateStyle or bytea_output a key would not
        # match and be taken for a delete), the apply lock, the epoch and the queued changes; then the rows
        epoch, changes = lock_epoch_and_own_changes(conn)
        if not changes:
            return None
        truncated = next((c.table for c in changes if c.op == "T"), None)
        if truncated is not None:
            raise StrictCommitFailed(
                f"strict transaction {gid} rolled back: TRUNCATE of {truncated} cannot run in a strict "
                "transaction (Neo4j empties a label in several transactions); run it as an ordinary write",
                gid,
                "postgresql",
            )
        mapped = [c for c in changes if self.mapping.entry(c.table) is not None]
        if not mapped:
            return None
        wanted: list[tuple[Entry, list[Key]]] = []
        for table, keys in ChangeBatch(mapped, "strict").keys_by_table().items():
            entry = self.mapping.entry(table)
            assert entry is not None
            wanted.append((entry, keys))
        batch = self.applier.build(self.rows.fetch(conn, wanted))
        if batch.failures:
            reasons = "; ".join(f"{f.table} {list(f.key)}: {f.reason}" for f in batch.failures[:5])
            raise StrictCommitFailed(
                f"strict transaction {gid} rolled back: Neo4j cannot store {len(batch.failures)} row(s): {reasons}",
                gid,
                "postgresql",
            )
        return batch, epoch

    def _write_graph(
        self,
        conn: psycopg.Connection[Any],
        session: Session,
        gid: str,
        batch: GraphBatch,
        epoch: int,
        deadline: float,
    ) -> Transaction:
        """Open the Neo4j transaction: marker first (it holds the gid from now on), then the batch; not committed."""
        try:
            if not self._marker_schema:  # recovery's veto relies on it; a schema change runs in its own transaction
                session.run(MARKER_CONSTRAINT).consume()
                self._marker_schema = True
            while True:
                ntx = _begin_pipelined(session, timeout=max(deadline - time.monotonic(), 1.0))
                try:
                    self._write_in(ntx, gid, batch, epoch)
                    break
                except EpochBehind as behind:
                    # the graph has seen newer epochs (reinstall, restore, a second source): move the sequence past
                    # them, still under the apply lock this transaction holds, and write again
                    ntx.close()
                    epoch = advance_epoch(conn, behind.high)
                except BaseException:
                    ntx.close()
                    raise
        except (Neo4jError, DriverError, OSError) as exc:
            self._rollback(conn, gid, "neo4j", prepared=False)
            raise StrictCommitFailed(
                f"strict transaction {gid} rolled back in PostgreSQL: the Neo4j write failed: {exc}",
                gid,
                "neo4j",
            ) from exc
        except BaseException:
            self._rollback(conn, gid, "neo4j", prepared=False)
            raise
        return ntx

    def _write_in(self, ntx: Transaction, gid: str, batch: GraphBatch, epoch: int) -> None:
        """The marker, then the batch: one statement when the batch fits in one (coordinate/write.py), else the
        writer's statements one by one. Raises `EpochBehind` when the graph has seen a newer epoch."""
        synced_at = dt.datetime.now(dt.UTC)
        one = strict_write(self.writer, batch, gid, epoch, synced_at)
        if one is None:
            ntx.run(MARKER_CREATE, gid=gid, epoch=epoch).consume()
            self.writer.write_in(ntx, batch, epoch, synced_at, None)
            return
        record = ntx.run(one.query, one.params).single(strict=True)
        high = record["high"]
        if high is not None and high > epoch:
            raise EpochBehind(epoch, int(high))

    def _commit_graph(self, conn: psycopg.Connection[Any], gid: str, ntx: Transaction) -> None:
        """The decision: the Neo4j commit. A refusal (veto by recovery, timeout) rolls back the prepared one."""
        try:
            ntx.commit()
        except Neo4jError as exc:  # the server answered: not committed
            self._rollback(conn, gid, "neo4j", prepared=True)
            raise StrictCommitFailed(
                f"strict transaction {gid} rolled back in both stores: Neo4j refused the commit: {exc}",
                gid,
                "neo4j",
            ) from exc
        except (
            DriverError,
            OSError,
        ) as exc:  # the connection broke: committed or not is unknown here
            self._settle_unknown_commit(conn, gid, exc)

    def _settle_unknown_commit(self, conn: psycopg.Connection[Any], gid: str, exc: BaseException) -> None:
        """The connection to Neo4j broke during COMMIT: the marker tells whether it committed."""
        try:
            with self.driver.session(database=self.database) as session:
                record = session.run(MARKERS_AMONG, gids=[gid]).single()
        except (Neo4jError, DriverError, OSError):
            record = None
        if record is not None and not record["vetoed"]:
            return  # committed: the caller goes on to COMMIT PREPARED
        raise StrictInDoubt(
            f"strict transaction {gid}: the connection to Neo4j broke while committing ({exc}); it stays prepared "
            "in PostgreSQL and `pg2neo recover` settles it (commit if Neo4j holds its marker, else veto and roll "
            "back)",
            gid,
            None,
        ) from exc

    def _rollback(self, conn: psycopg.Connection[Any], gid: str, stage: str, prepared: bool) -> None:
        STRICT_ROLLBACKS.labels(stage).inc()
        event(log, "strict_rolled_back", gid=gid, stage=stage)
        if conn.closed or conn.broken:
            return  # the server ends the session's transaction; a prepared one is left to recovery
        statement = sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)) if prepared else sql.SQL("ROLLBACK")
        try:
            conn.execute(statement)
        except psycopg.errors.UndefinedObject:
            pass  # recovery rolled it back first
        except psycopg.Error as exc:
            event(log, "strict_rollback_failed", gid=gid, error=str(exc))


def _begin_pipelined(session: Session, timeout: float) -> Transaction:
    """An explicit Neo4j transaction whose BEGIN goes out with its first statement instead of a round trip of its own
    (a strict commit waits for every round trip with the application's transaction and the apply lock held).

    The driver has no public switch for it: `_pipelined_begin` is the flag its own `Driver.execute_query` sets (neo4j
    6.x). A failed BEGIN then surfaces at the first `run`, which is handled as any failed Neo4j write. Without the flag
    (another driver version) this is an ordinary `begin_transaction`."""
    pipelined = getattr(session, "_pipelined_begin", None)
    if pipelined is None:
        return session.begin_transaction(timeout=timeout)
    with pipelined:
        return session.begin_transaction(timeout=timeout)


def _begin_statement(conn: psycopg.Connection[Any]) -> sql.SQL | sql.Composed:
    if conn.isolation_level is None:
        return sql.SQL("BEGIN")
    return sql.SQL("BEGIN ISOLATION LEVEL {}").format(sql.SQL(conn.isolation_level.name.replace("_", " ")))


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
