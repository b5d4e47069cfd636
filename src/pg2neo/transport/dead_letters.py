"""`pg2neo.dead_letters`: rows the applier could not store in Neo4j, with the reason.

Place in the data flow: beside the queue. `pg2neo dlq` and the web console read and act through these functions
only. A retry puts the row's key back into `pg2neo.changes`, so the applier re-reads the CURRENT row and applies
it through the same version guards as any change (a stale dead letter can never overwrite newer data). The applier
removes the dead letter when the key is applied cleanly (`clear_dead_letters`); if it fails again the dead letter
stays (`record_dead_letters`), with `attempts` one higher and a new `last_failed_at`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import psycopg

from pg2neo.errors import Pg2NeoError

NAMES = ("id", "tbl", "key", "op", "error_class", "message", "attempts", "first_failed_at", "last_failed_at")
_COLUMNS = ", ".join(NAMES)


class NewDeadLetter(NamedTuple):
    """A key that failed now: `op` as queued (U when it came from no queued change), `payload` the row read."""

    table: str
    key: tuple[str, ...]
    op: str
    error_class: str
    message: str
    payload: Any


@contextmanager
def _installed() -> Iterator[None]:
    try:
        yield
    except psycopg.errors.UndefinedTable as exc:
        detail = exc.diag.message_primary
        raise Pg2NeoError(f"pg2neo is not installed in this database: run `pg2neo init` ({detail})") from exc


def record_dead_letters(conn: psycopg.Connection[Any], letters: list[NewDeadLetter]) -> None:
    """Insert these dead letters; one already kept for the same key gets the new reason and one more attempt."""
    if not letters:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO pg2neo.dead_letters AS d (tbl, key, op, error_class, message, payload) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tbl, key) DO UPDATE SET "
            "attempts = d.attempts + 1, last_failed_at = now(), message = EXCLUDED.message, "
            "error_class = EXCLUDED.error_class, payload = EXCLUDED.payload, op = EXCLUDED.op",
            [
                (d.table, list(d.key), d.op, d.error_class, d.message, json.dumps(d.payload, default=str))
                for d in letters
            ],
        )


def clear_dead_letters(conn: psycopg.Connection[Any], applied: list[tuple[str, tuple[str, ...]]]) -> None:
    """Forget the dead letters of these (table, key)s: they were applied cleanly now."""
    if not applied:
        return
    conn.execute(
        "DELETE FROM pg2neo.dead_letters d USING jsonb_array_elements(%s::jsonb) AS a(k) "
        "WHERE d.tbl = a.k ->> 0 AND d.key = ARRAY(SELECT jsonb_array_elements_text(a.k -> 1))",
        (json.dumps([[table, list(key)] for table, key in applied]),),
    )


def count_dead_letters(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pg2neo.dead_letters").fetchone()
    return int(row[0]) if row else 0


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

    The letters stay until the applier applies their keys cleanly (then it deletes them)."""
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
