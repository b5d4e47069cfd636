"""`pg2neo.snapshot_progress`: how far the snapshot of each mapped table got (its last key, rows, done)."""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

import psycopg


class SnapshotProgress(NamedTuple):
    table: str
    last_key: list[str] | None
    rows_done: int
    done: bool
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


def read_progress(conn: psycopg.Connection[Any], table: str) -> SnapshotProgress | None:
    """One table's progress, or None before its first page."""
    row = conn.execute(
        "SELECT tbl, last_key, rows_done, done, started_at, finished_at FROM pg2neo.snapshot_progress WHERE tbl = %s",
        (table,),
    ).fetchone()
    return None if row is None else SnapshotProgress(str(row[0]), row[1], int(row[2]), bool(row[3]), row[4], row[5])


def all_progress(conn: psycopg.Connection[Any]) -> list[SnapshotProgress]:
    """Every table's progress, by table."""
    rows = conn.execute(
        "SELECT tbl, last_key, rows_done, done, started_at, finished_at FROM pg2neo.snapshot_progress ORDER BY tbl"
    ).fetchall()
    return [SnapshotProgress(str(r[0]), r[1], int(r[2]), bool(r[3]), r[4], r[5]) for r in rows]


def write_progress(
    conn: psycopg.Connection[Any], table: str, last_key: list[str] | None, rows_done: int, done: bool
) -> None:
    """Record a page's progress (in the page's transaction, after its Neo4j commit); `done` stamps `finished_at`."""
    conn.execute(
        "INSERT INTO pg2neo.snapshot_progress (tbl, last_key, rows_done, done, finished_at) "
        "VALUES (%s, %s, %s, %s, CASE WHEN %s THEN now() END) ON CONFLICT (tbl) DO UPDATE SET "
        "last_key = EXCLUDED.last_key, rows_done = EXCLUDED.rows_done, done = EXCLUDED.done, "
        "finished_at = EXCLUDED.finished_at",
        (table, last_key, rows_done, done, done),
    )


def reset_progress(conn: psycopg.Connection[Any]) -> None:
    """Forget every table's progress: the next snapshot starts from the beginning."""
    conn.execute("DELETE FROM pg2neo.snapshot_progress")
