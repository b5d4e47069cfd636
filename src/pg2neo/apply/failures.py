"""Which failures are about the rows being applied, and which are about the servers (shared by engine and service).

A failure about the data (a value PostgreSQL cannot produce or Neo4j cannot store, a converter that chokes on a
value shape, a key too large to index) is isolated to its row, which becomes a dead letter, and the batch goes on.
A failure about the servers (connection lost or refused, authentication, a transient Neo4j error) must never
dead-letter anything: the batch stays queued and is retried, or the service stops and says why.
"""

from __future__ import annotations

import psycopg
from neo4j.exceptions import (
    AuthError,
    ConnectionPoolError,
    DriverError,
    Forbidden,
    IncompleteCommit,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)

from pg2neo.errors import Pg2NeoError

# ServiceUnavailable covers a refused or dropped Bolt connection and IncompleteCommit (replaying is idempotent);
# psycopg's OperationalError covers lost connections, admin shutdown, deadlocks and serialization failures.
TRANSIENT: tuple[type[BaseException], ...] = (
    ServiceUnavailable,
    SessionExpired,
    IncompleteCommit,
    ConnectionPoolError,
    TransientError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    ConnectionError,
    TimeoutError,
)


def about_the_servers(exc: BaseException) -> bool:
    """True when retrying the same rows elsewhere or later is the only remedy: never a reason to dead-letter."""
    if isinstance(exc, (*TRANSIENT, AuthError, Forbidden, OSError, Pg2NeoError)):
        return True
    if isinstance(exc, Neo4jError):
        code = exc.code or ""
        return code.startswith(("Neo.ClientError.Security.", "Neo.TransientError.", "Neo.ClientError.Database."))
    if isinstance(exc, DriverError):
        return True  # the driver's own state (session, connection, configuration), not a value
    if isinstance(exc, psycopg.Error):
        # a data exception (SQLSTATE class 22: out of range, invalid text) is one row's; anything else is not
        return not isinstance(exc, psycopg.DataError)
    return not isinstance(exc, Exception)


def about_the_data(exc: BaseException) -> bool:
    """True when the rows being written or read may be the cause: isolate them (bisect) before giving up."""
    return not about_the_servers(exc)
