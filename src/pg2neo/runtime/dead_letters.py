"""The dead letters: rows the applier could not store in Neo4j, kept in `pg2neo.dead_letters` with the reason.

Place in the data flow: beside the queue. `pg2neo dlq` and the web console read and act through these functions
only. A retry puts the row's key back into `pg2neo.changes`, so the applier re-reads the CURRENT row and applies
it through the same version guards as any change (a stale dead letter can never overwrite newer data). The engine
removes the dead letter when the key is applied cleanly; if it fails again the dead letter stays, with `attempts`
one higher and a new `last_failed_at`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from pg2neo.errors import Pg2NeoError

NAMES = ("id", "tbl", "key", "op", "error_class", "message", "attempts", "first_failed_at", "last_failed_at")
_COLUMNS = ", ".join(NAMES)


@contextmanager
def _installed() -> Iterator[None]:
    try:
        yield
    except psycopg.errors.UndefinedTable as exc:
        detail = exc.diag.message_primary
        raise Pg2NeoError(f"pg2neo is not installed in this database: run `pg2neo init` ({detail})") from exc


def list_dead_letters(conn: psycopg.Connection[Any], limit: int = 100) -> list[dict[str, Any]]:
    """At most `limit` dead letters, oldest first, without their payloads (keys in NAMES order)."""
    with _installed():
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM pg2neo.dead_letters ORDER BY id LIMIT %s",  # noqa: S608 (fixed column list)
            (limit,),
        ).fetchall()
    return [dict(zip(NAMES, row, strict=True)) for row in rows]


def get_dead_letter(conn: psycopg.Connection[Any], dead_letter_id: int) -> dict[str, Any] | None:
    """One dead letter in full (NAMES then `payload`, the row as it was read), or None."""
    with _installed():
        row = conn.execute(
            f"SELECT {_COLUMNS}, payload FROM pg2neo.dead_letters WHERE id = %s",  # noqa: S608 (fixed column list)
            (dead_letter_id,),
        ).fetchone()
    return None if row is None else dict(zip([*NAMES, "payload"], row, strict=True))


def retry_dead_letters(conn: psycopg.Connection[Any], ids: list[int] | None) -> int:
    """Queue the keys of these dead letters (None: all of them) again; returns how many keys were queued.

    The letters stay until the engine applies their keys cleanly (then it deletes them)."""
    with _installed(), conn.transaction():
        cur = conn.execute(
            "INSERT INTO pg2neo.changes (tbl, op, key) SELECT tbl, op, key FROM pg2neo.dead_letters "
            "WHERE %(all)s OR id = ANY(%(ids)s) ORDER BY id",
            {"all": ids is None, "ids": ids or []},
        )
    return cur.rowcount


def drop_dead_letters(conn: psycopg.Connection[Any], ids: list[int] | None) -> int:
    """Forget these dead letters (None: all of them); the rows stay as they are in PostgreSQL, not in Neo4j."""
    with _installed():
        cur = conn.execute(
            "DELETE FROM pg2neo.dead_letters WHERE %(all)s OR id = ANY(%(ids)s)",
            {"all": ids is None, "ids": ids or []},
        )
    return cur.rowcount
