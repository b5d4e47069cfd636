"""Integration test of the demo data generator and live workload against a real PostgreSQL.

Runs against the session's real PostgreSQL (tests/conftest.py).
"""

from __future__ import annotations

import psycopg
import pytest

from pg2neo.demo.generate import TABLES, generate, load_schema, row_counts
from pg2neo.demo.workload import OPERATIONS, live_burst, writer_loop

pytestmark = pytest.mark.integration


@pytest.fixture
def scratch_dsn(pg_dsn: str) -> str:
    """A fresh, empty database (the shared `pg_dsn` fixture creates and drops it)."""
    return pg_dsn


def test_generate_load_and_live_burst(scratch_dsn: str) -> None:
    with psycopg.connect(scratch_dsn) as conn:
        load_schema(conn)
        # On empty tables every operation has nothing to act on.
        idle = live_burst(conn, 20)
        assert idle["skipped"] == 20

        load_schema(conn)  # re-runnable
        counts = generate(conn, 200)
        assert list(counts) == list(TABLES)
        assert counts["content_items"] == 200
        assert all(counts[table] > 0 for table in TABLES)
        assert row_counts(conn) == counts

        with pytest.raises(ValueError, match="not empty"):
            generate(conn, 200)

        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM content_items WHERE octet_length(body) > 8192")
            assert (cur.fetchone() or (0,))[0] >= 1
            cur.execute("SELECT count(*) FROM threads WHERE parent_thread_id IS NOT NULL")
            assert (cur.fetchone() or (0,))[0] >= 1
            # The identity sequences were advanced past the generated ids.
            cur.execute("INSERT INTO threads (tenant_id) SELECT id FROM tenants LIMIT 1 RETURNING id")
            assert (cur.fetchone() or (0,))[0] == counts["threads"] + 1
        conn.rollback()

        result = live_burst(conn, 200)
        assert sum(result.values()) == 200
        assert result["conflicts"] == 0
        assert sum(result[name] for name, _ in OPERATIONS) >= 190
        assert row_counts(conn) != counts

        with conn.cursor() as cur:
            cur.execute("SELECT count(*), max(version) FROM content_items")
            row = cur.fetchone()
            assert row is not None and row[1] > 1  # updates went through the version trigger


def test_same_seed_same_database(scratch_dsn: str) -> None:
    with psycopg.connect(scratch_dsn) as conn:
        load_schema(conn)
        generate(conn, 30, seed=11)
        with conn.cursor() as cur:
            cur.execute("SELECT md5(string_agg(m::text, ',' ORDER BY id)) FROM messages m")
            first = cur.fetchone()
        conn.commit()
        load_schema(conn)
        generate(conn, 30, seed=11)
        with conn.cursor() as cur:
            cur.execute("SELECT md5(string_agg(m::text, ',' ORDER BY id)) FROM messages m")
            assert cur.fetchone() == first
        conn.commit()


def test_writer_loop(scratch_dsn: str) -> None:
    with psycopg.connect(scratch_dsn) as conn:
        load_schema(conn)
        generate(conn, 100)
    counts = writer_loop(scratch_dsn, seconds=1.0, rate=40.0, seed=3)
    done = sum(counts.values()) - counts["connection_errors"]
    assert 20 <= done <= 45
    assert counts["connection_errors"] == 0
