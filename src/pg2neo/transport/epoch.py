"""`pg2neo.epoch`: the sequence every batch takes its epoch from, stamped on what it writes in Neo4j."""

from __future__ import annotations

from typing import Any

import psycopg


def next_epoch(conn: psycopg.Connection[Any]) -> int:
    """A new epoch (non-transactional: a rolled-back batch leaves a gap)."""
    row = conn.execute("SELECT nextval('pg2neo.epoch')").fetchone()
    assert row is not None
    return int(row[0])


def advance_epoch(conn: psycopg.Connection[Any], high: int) -> int:
    """Move the sequence to `high` and return the next epoch after it."""
    row = conn.execute("SELECT setval('pg2neo.epoch', %s), nextval('pg2neo.epoch')", (high,)).fetchone()
    assert row is not None
    return int(row[1])
