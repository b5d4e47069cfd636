"""What the strict-mode committer and recovery agree on: global ids, timeouts, errors, metrics (the marker statements
are in the graph vocabulary, apply/cypher.py).

Place in the data flow: beside the sync path, not in it. A strict transaction (coordinate/strict.py) prepares its
PostgreSQL transaction under a pg2neo global id, commits its graph writes in Neo4j together with a marker node
holding that id, then commits the prepared transaction. Recovery (coordinate/recovery.py) reads the markers to
settle prepared transactions whose committer died: marker present means Neo4j committed, so PostgreSQL must too.

    CoordinateError (pg2neo.errors)
     ├── PreparedTransactionsDisabled   max_prepared_transactions = 0 on the server
     ├── StrictCommitFailed             rolled back in both stores; nothing was written anywhere
     ├── StrictInDoubt                  the outcome is not known yet; `pg2neo recover` settles it
     └── RecoveryUnavailable (Transient) a server did not answer during recovery
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from prometheus_client import Counter

from pg2neo.errors import CoordinateError, Transient
from pg2neo.settings import PREPARED_TIMEOUT

GID_PREFIX = "pg2neo"

STRICT_COMMITS = Counter("pg2neo_strict_commits", "Strict transactions committed in PostgreSQL and Neo4j")
STRICT_ROLLBACKS = Counter(
    "pg2neo_strict_rollbacks",
    "Strict transactions rolled back in both stores",
    ["stage"],
)  # stage: application, postgresql, neo4j
STRICT_RECOVERIES = Counter(
    "pg2neo_strict_recoveries",
    "In-doubt strict transactions settled by recovery",
    ["outcome"],
)  # outcome: commit, rollback


class PreparedTransactionsDisabled(CoordinateError):
    """The PostgreSQL server has max_prepared_transactions = 0: strict mode cannot prepare."""


class StrictCommitFailed(CoordinateError):
    """The strict transaction was rolled back in both stores (`stage` says which server failed)."""

    def __init__(self, message: str, gid: str, stage: str) -> None:
        super().__init__(message)
        self.gid = gid
        self.stage = stage


class StrictInDoubt(CoordinateError):
    """The commit's outcome is not known yet (a server stopped answering in the commit phase).

    `decided` is "commit" when Neo4j is known to have committed (PostgreSQL will follow at recovery), else None:
    recovery then commits if Neo4j holds the marker and rolls back once the transaction is older than the timeout.
    """

    def __init__(self, message: str, gid: str, decided: str | None) -> None:
        super().__init__(message)
        self.gid = gid
        self.decided = decided


class RecoveryUnavailable(CoordinateError, Transient):
    """A server did not answer during recovery; nothing was settled on a guess."""


@dataclass(frozen=True)
class StrictSettings:
    """Timeouts of strict mode.

    prepared_timeout: recovery rolls back a prepared pg2neo transaction without marker once it is this old (s).
    safety_margin: the Neo4j transaction of a strict commit is given a server-side timeout that ends at least
    this long before prepared_timeout, so Neo4j can no longer commit a transaction recovery may roll back (s).
    """

    prepared_timeout: float = PREPARED_TIMEOUT
    safety_margin: float = 10.0

    def __post_init__(self) -> None:
        if self.safety_margin <= 0 or self.prepared_timeout <= self.safety_margin + 1:
            raise CoordinateError(
                f"strict mode: prepared_timeout ({self.prepared_timeout}s) must exceed safety_margin "
                f"({self.safety_margin}s) by more than a second, and the margin must be positive"
            )


def gid_scope(dbname: str) -> str:
    """The prefix of every global id of one PostgreSQL database (prepared transactions are cluster-wide)."""
    return f"{GID_PREFIX}:{dbname}:"


def new_gid(dbname: str) -> str:
    return gid_scope(dbname) + uuid.uuid4().hex


def check_prepared_enabled(conn: psycopg.Connection[Any]) -> int:
    """The server's max_prepared_transactions; a clear error when it is 0."""
    row = conn.execute("SELECT current_setting('max_prepared_transactions')::int").fetchone()
    limit = int(row[0]) if row else 0
    if limit <= 0:
        raise PreparedTransactionsDisabled(
            "strict mode needs two-phase commit, but this PostgreSQL server has max_prepared_transactions = 0: "
            "set it in postgresql.conf to at least the number of connections running strict transactions at "
            "once (e.g. max_prepared_transactions = 64) and restart PostgreSQL"
        )
    return limit
