"""Strict mode: two-phase commit across PostgreSQL and Neo4j (Neo4j as the last resource), and its recovery.

    with strict_transaction(conn, driver, mapping) as tx:
        tx.execute("UPDATE person SET name = %s WHERE id = %s", ("Ada", 1))

See docs/strict-mode.md for the protocol, the recovery rules and the remaining window.
"""

from __future__ import annotations

from pg2neo.coordinate.protocol import (
    PreparedTransactionsDisabled,
    RecoveryUnavailable,
    StrictCommitFailed,
    StrictInDoubt,
    StrictSettings,
)
from pg2neo.coordinate.recovery import RecoveryReport, recover, start_periodic_recovery
from pg2neo.coordinate.strict import StrictCoordinator, StrictTransaction, strict_transaction

__all__ = [
    "PreparedTransactionsDisabled",
    "RecoveryReport",
    "RecoveryUnavailable",
    "StrictCommitFailed",
    "StrictCoordinator",
    "StrictInDoubt",
    "StrictSettings",
    "StrictTransaction",
    "recover",
    "start_periodic_recovery",
    "strict_transaction",
]
