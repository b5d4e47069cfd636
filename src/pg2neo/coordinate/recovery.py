"""Recovery of strict transactions: settles every in-doubt pg2neo prepared transaction from the Neo4j markers.

Place in the data flow: beside the sync path; run by `pg2neo recover`, and by the service at start and
periodically (`start_periodic_recovery`). For each prepared transaction of this database whose global id is a
pg2neo one:
  - its marker `(:_Pg2neoTx {gid})` is in Neo4j -> Neo4j committed -> `COMMIT PREPARED`;
  - a veto for it is in Neo4j (an earlier recovery stopped half way) -> `ROLLBACK PREPARED`;
  - neither, and at least `prepared_timeout` old -> veto: MERGE the gid's node with `vetoed = true` under the
    uniqueness constraint. The committer created its marker before PREPARE, so if its Neo4j transaction is still
    open the MERGE waits for it, then finds the committed marker (-> commit) or creates the veto (-> rollback),
    after which that Neo4j transaction can no longer commit. Safe at any age: the timeout only spares a committer
    in its normal path the wait;
  - neither, and younger -> left alone (reported as in doubt).
Markers are read before the prepared transactions are listed; a marker whose id is no longer prepared belongs to a
transaction already committed in both stores and is deleted.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import psycopg
from neo4j import Driver, ManagedTransaction
from neo4j.exceptions import DriverError, Neo4jError

from pg2neo.apply.cypher import MARKER_CONSTRAINT, MARKER_VETO, MARKERS_AMONG, MARKERS_DELETE, MARKERS_IN_SCOPE
from pg2neo.coordinate.protocol import (
    STRICT_RECOVERIES,
    PreparedTransactionsDisabled,
    RecoveryUnavailable,
    StrictSettings,
    check_prepared_enabled,
    gid_scope,
)
from pg2neo.logs import event, get_logger

log = get_logger("recovery")


@dataclass
class RecoveryReport:
    committed: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    in_doubt: list[str] = field(default_factory=list)
    markers_removed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "committed": self.committed,
            "rolled_back": self.rolled_back,
            "in_doubt": self.in_doubt,
            "markers_removed": self.markers_removed,
        }


def recover(
    conn_or_dsn: psycopg.Connection[Any] | str,
    driver: Driver,
    database: str = "neo4j",
    prepared_timeout: float | None = None,
) -> RecoveryReport:
    """Settle this database's in-doubt strict transactions; see the module docstring for the rules."""
    timeout = StrictSettings().prepared_timeout if prepared_timeout is None else prepared_timeout
    if isinstance(conn_or_dsn, str):
        with psycopg.connect(conn_or_dsn, autocommit=True, application_name="pg2neo-recover") as conn:
            return _recover(conn, driver, database, timeout)
    if not conn_or_dsn.autocommit:
        raise ValueError("recover() needs an autocommit connection (COMMIT PREPARED cannot run in a transaction)")
    return _recover(conn_or_dsn, driver, database, timeout)


def _recover(conn: psycopg.Connection[Any], driver: Driver, database: str, timeout: float) -> RecoveryReport:
    check_prepared_enabled(conn)
    scope = gid_scope(conn.info.dbname)
    report = RecoveryReport()
    try:
        with driver.session(database=database) as session:
            session.run(MARKER_CONSTRAINT).consume()
            markers_before = {str(r["gid"]) for r in session.run(MARKERS_IN_SCOPE, scope=scope)}
            prepared = {
                str(gid): float(age)
                for gid, age in conn.execute(
                    "SELECT gid, extract(epoch FROM now() - prepared) FROM pg_prepared_xacts "
                    "WHERE database = current_database() AND starts_with(gid, %s)",
                    (scope,),
                ).fetchall()
            }
            # read again after the listing: a committer may have committed in Neo4j since the first read
            decided = (
                {str(r["gid"]): not r["vetoed"] for r in session.run(MARKERS_AMONG, gids=list(prepared))}
                if prepared
                else {}
            )
            for gid, age in prepared.items():
                if gid not in decided and age >= timeout:
                    # No marker: veto. If the committer's Neo4j transaction is still open, this waits for it to end
                    # (it created its marker first): then it finds its marker (commit) or creates the veto.
                    vetoed = session.execute_write(_veto, gid)
                    decided[gid] = not vetoed
    except (Neo4jError, DriverError) as exc:
        raise RecoveryUnavailable(f"recovery needs Neo4j and it did not answer: {exc}") from exc
    for gid in sorted(prepared):
        if gid not in decided:
            report.in_doubt.append(gid)
        elif decided[gid]:
            if _finish(conn, gid, "COMMIT"):
                report.committed.append(gid)
        elif _finish(conn, gid, "ROLLBACK"):
            report.rolled_back.append(gid)
    settled = (markers_before - set(prepared)) | set(report.committed) | set(report.rolled_back)
    if settled:
        try:
            with driver.session(database=database) as session:
                session.run(MARKERS_DELETE, gids=sorted(settled)).consume()
        except (Neo4jError, DriverError) as exc:
            event(log, "markers_not_removed", count=len(settled), error=str(exc))
        else:
            report.markers_removed = len(settled)
    if report.committed or report.rolled_back or report.in_doubt:
        event(
            log,
            "strict_recovery",
            **{k: len(v) for k, v in report.as_dict().items() if isinstance(v, list)},
        )
    return report


def _veto(tx: ManagedTransaction, gid: str) -> bool:
    """True when recovery's veto now holds the gid; False when the committer's marker was (or got) there first."""
    return bool(tx.run(MARKER_VETO, gid=gid).single(strict=True)["vetoed"])


def _finish(conn: psycopg.Connection[Any], gid: str, action: str) -> bool:
    """COMMIT or ROLLBACK PREPARED; False when the committer settled it meanwhile."""
    try:
        if action == "COMMIT":
            conn.tpc_commit(gid)
        else:
            conn.tpc_rollback(gid)
    except psycopg.errors.UndefinedObject:
        return False
    except psycopg.errors.ObjectNotInPrerequisiteState:
        return False  # "is busy": the committer is finishing it right now
    STRICT_RECOVERIES.labels(action.lower()).inc()
    event(log, "strict_recovered", gid=gid, outcome=action.lower())
    return True


def start_periodic_recovery(
    pg_dsn: str,
    driver: Driver,
    stop: threading.Event,
    database: str = "neo4j",
    interval: float = 15.0,
    prepared_timeout: float | None = None,
) -> threading.Thread:
    """Run `recover` now and every `interval` seconds in a daemon thread until `stop` is set.

    A thread, not a step of the apply loop: a prepared transaction left by a dead committer holds the apply lock,
    so the applier blocks on it until recovery (running beside it) rolls the transaction back or commits it.
    """

    def loop() -> None:
        while not stop.is_set():
            try:
                recover(pg_dsn, driver, database, prepared_timeout)
            except PreparedTransactionsDisabled as exc:
                # Nothing can ever be prepared on this server, so there is nothing to recover: say so once.
                event(log, "strict_mode_unavailable", logging.WARNING, detail=str(exc))
                return
            except (RecoveryUnavailable, psycopg.OperationalError) as exc:
                event(log, "strict_recovery_skipped", error=str(exc))
            except Exception as exc:  # the thread must outlive one failed pass
                event(log, "strict_recovery_failed", logging.ERROR, error=f"{type(exc).__name__}: {exc}")
            stop.wait(interval)

    thread = threading.Thread(target=loop, name="pg2neo-strict-recovery", daemon=True)
    thread.start()
    return thread
