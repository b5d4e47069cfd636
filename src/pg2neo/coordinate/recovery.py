"""Recovery of strict transactions: settles every in-doubt pg2neo prepared transaction from the Neo4j markers.

Place in the data flow: beside the sync path; run by `pg2neo recover`, and by the service at start and
periodically (`start_periodic_recovery`). For each prepared transaction of this database whose global id is a
pg2neo one:
  - its marker `(:_Pg2neoTx {gid})` is in Neo4j -> Neo4j committed -> `COMMIT PREPARED`;
  - no marker and older than `prepared_timeout` -> the committer died before (or without) the Neo4j commit, and its
    Neo4j transaction has timed out by now -> `ROLLBACK PREPARED`;
  - no marker and younger -> the committer may still be working: left alone (reported as in doubt).
Markers are read before the prepared transactions are listed; a marker whose id is no longer prepared belongs to a
transaction already committed in both stores and is deleted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import psycopg
from neo4j import Driver
from neo4j.exceptions import DriverError, Neo4jError

from pg2neo.coordinate.protocol import (
    MARKERS_AMONG,
    MARKERS_DELETE,
    MARKERS_IN_SCOPE,
    STRICT_RECOVERIES,
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
            present = {str(r["gid"]) for r in session.run(MARKERS_AMONG, gids=list(prepared))} if prepared else set()
    except (Neo4jError, DriverError) as exc:
        raise RecoveryUnavailable(f"recovery needs Neo4j and it did not answer: {exc}") from exc
    for gid, age in sorted(prepared.items()):
        if gid in present:
            if _finish(conn, gid, "COMMIT"):
                report.committed.append(gid)
        elif age >= timeout:
            if _finish(conn, gid, "ROLLBACK"):
                report.rolled_back.append(gid)
        else:
            report.in_doubt.append(gid)
    settled = (markers_before - set(prepared)) | set(report.committed)
    if settled:
        try:
            with driver.session(database=database) as session:
                session.run(MARKERS_DELETE, gids=sorted(settled)).consume()
        except (Neo4jError, DriverError) as exc:
            event(log, "markers_not_removed", count=len(settled), error=str(exc))
        else:
            report.markers_removed = len(settled)
    if report.committed or report.rolled_back or report.in_doubt:
        event(log, "strict_recovery", **{k: len(v) for k, v in report.as_dict().items() if isinstance(v, list)})
    return report


def _finish(conn: psycopg.Connection[Any], gid: str, action: str) -> bool:
    """COMMIT or ROLLBACK PREPARED; False when the committer settled it meanwhile."""
    try:
        if action == "COMMIT":
            conn.tpc_commit(gid)
        else:
            conn.tpc_rollback(gid)
    except psycopg.errors.UndefinedObject:
        return False
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
            except (RecoveryUnavailable, psycopg.OperationalError) as exc:
                event(log, "strict_recovery_skipped", error=str(exc))
            stop.wait(interval)

    thread = threading.Thread(target=loop, name="pg2neo-strict-recovery", daemon=True)
    thread.start()
    return thread
