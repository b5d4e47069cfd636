"""Demo live-write workload for the reference schema (``schema.sql``): ordinary SQL writes on demo data.

``live_burst`` runs a fixed number of operations on a connection, ``writer_loop`` runs them for a while on
its own connection, optionally rate-limited, reconnecting when the server goes away (fault tests restart
or kill it). Each operation is one small transaction, drawn from ``OPERATIONS`` by weight:

* inserts: a content item with 1–4 chunks (sometimes linked to a thread), a thread (sometimes with a parent
  thread and a content link), a message with 0–3 context chunks, a thread/content link;
* updates: a content item's title, a content item's body (sometimes long enough for TOAST, sometimes NULL)
  and tags, a message's body, a relevance score, a user's display name; re-pointing a message to another
  thread; setting a content item's or thread's ``project_id`` to NULL;
* deletes: a message, a content item (cascading to its chunks, links and message contexts), a
  thread/content link.

Rows are picked with index range probes (a random key, then the next existing one), which stay fast on
large tables; an operation whose table is empty is counted as ``skipped``. An operation that loses a race
with a concurrent writer (a foreign key or unique violation, a deadlock, a serialization failure) is rolled
back and counted as ``conflicts``.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from pg2neo.demo.generate import (
    random_display_name,
    random_embedding,
    random_long_text,
    random_metadata,
    random_relevance,
    random_tags,
    random_text,
    random_title,
    random_uuid,
    token_count,
)

Cursor = psycopg.Cursor[Any]

OPERATIONS: tuple[tuple[str, int], ...] = (
    ("insert_content", 10),
    ("insert_thread", 5),
    ("insert_message", 16),
    ("insert_thread_content", 7),
    ("update_content_title", 8),
    ("update_content_body", 6),
    ("update_message_body", 7),
    ("update_relevance", 7),
    ("update_display_name", 5),
    ("move_message", 5),
    ("clear_project", 4),
    ("delete_message", 6),
    ("delete_content", 3),
    ("delete_thread_content", 5),
)
"""Operation kinds and their relative weights."""

OUTCOMES: tuple[str, ...] = ("skipped", "conflicts")
"""Counters besides the operation kinds: ``skipped`` (nothing to act on), ``conflicts`` (rolled back)."""

_CONFLICTS = (psycopg.errors.IntegrityError, psycopg.errors.TransactionRollback)


# ------------------------------------------------------------------------------------------------------
# Picking existing rows
# ------------------------------------------------------------------------------------------------------


def _fetch_scalar(cur: Cursor, query: sql.SQL | sql.Composed, params: tuple[Any, ...] = ()) -> Any:
    cur.execute(query, params)
    row = cur.fetchone()
    return None if row is None else row[0]


def _pick_bigint(cur: Cursor, rng: random.Random, table: str, condition: sql.Composable | None = None) -> int | None:
    """A random existing ``id`` of a bigint-keyed table (satisfying ``condition``), or None."""
    if condition is None:
        condition = sql.SQL("true")
    cur.execute(sql.SQL("SELECT min(id), max(id) FROM {}").format(sql.Identifier(table)))
    bounds = cur.fetchone()
    if bounds is None or bounds[0] is None:
        return None
    probe = rng.randint(bounds[0], bounds[1])
    query = sql.SQL("SELECT id FROM {} WHERE id >= %s AND ({}) ORDER BY id LIMIT 1")
    found: int | None = _fetch_scalar(cur, query.format(sql.Identifier(table), condition), (probe,))
    if found is None:  # wrap around
        found = _fetch_scalar(cur, query.format(sql.Identifier(table), condition), (bounds[0],))
    return found


def _pick_uuid(cur: Cursor, rng: random.Random, table: str) -> uuid.UUID | None:
    """A random existing ``id`` of a uuid-keyed table, or None if it is empty."""
    query = sql.SQL("SELECT id FROM {} WHERE id >= %s ORDER BY id LIMIT 1").format(sql.Identifier(table))
    found: uuid.UUID | None = _fetch_scalar(cur, query, (random_uuid(rng),))
    if found is None:  # wrap around
        found = _fetch_scalar(cur, query, (uuid.UUID(int=0),))
    return found


def _maybe(rng: random.Random, probability: float, value: Any) -> Any:
    return value if rng.random() < probability else None


def _pick_project_and_tenant(cur: Cursor, rng: random.Random) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    """A project and its tenant, or (None, some tenant) if there are no projects."""
    project = _pick_uuid(cur, rng, "projects")
    if project is not None:
        tenant = _fetch_scalar(cur, sql.SQL("SELECT tenant_id FROM projects WHERE id = %s"), (project,))
        if tenant is not None:
            return project, tenant
    return None, _pick_uuid(cur, rng, "tenants")


def _pick_thread_content(cur: Cursor, rng: random.Random) -> tuple[int, int] | None:
    """A random existing (thread_id, content_item_id) link, or None."""
    thread = _pick_bigint(cur, rng, "threads")
    query = sql.SQL(
        "SELECT thread_id, content_item_id FROM thread_content WHERE thread_id >= %s"
        " ORDER BY thread_id, content_item_id LIMIT 1"
    )
    for start in (thread or 0, 0):
        cur.execute(query, (start,))
        row = cur.fetchone()
        if row is not None:
            return int(row[0]), int(row[1])
    return None


# ------------------------------------------------------------------------------------------------------
# Operations: each returns False when there was nothing to act on
# ------------------------------------------------------------------------------------------------------


def _link_context(cur: Cursor, rng: random.Random, message_id: int, count: int) -> None:
    chunks: list[int] = []
    for _ in range(count):
        chunk = _pick_bigint(cur, rng, "content_chunks")
        if chunk is not None and chunk not in chunks:
            chunks.append(chunk)
    if chunks:
        cur.executemany(
            "INSERT INTO message_context (message_id, chunk_id, rank) VALUES (%s, %s, %s)",
            [(message_id, chunk, rank) for rank, chunk in enumerate(chunks, start=1)],
        )


def _insert_content(cur: Cursor, rng: random.Random) -> bool:
    project, tenant = _pick_project_and_tenant(cur, rng)
    if tenant is None:
        return False
    author = _maybe(rng, 0.9, _pick_uuid(cur, rng, "users"))
    body = random_long_text(rng) if rng.random() < 0.02 else _maybe(rng, 0.95, random_text(rng, 20, 120))
    cur.execute(
        "INSERT INTO content_items (tenant_id, project_id, author_id, kind, title, description, body, tags,"
        " metadata) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            tenant,
            _maybe(rng, 0.85, project),
            author,
            rng.choice(("document", "video", "audio", "link", "note")),
            random_title(rng),
            _maybe(rng, 0.7, random_text(rng, 5, 25)),
            body,
            random_tags(rng),
            Jsonb(metadata) if (metadata := random_metadata(rng)) is not None else None,
        ),
    )
    row = cur.fetchone()
    assert row is not None
    item_id = int(row[0])
    chunks = []
    for index in range(rng.randint(1, 4)):
        text = random_text(rng, 10, 60)
        chunks.append((item_id, index, text, token_count(rng, text), random_embedding(rng)))
    cur.executemany(
        "INSERT INTO content_chunks (content_item_id, chunk_index, text, token_count, embedding)"
        " VALUES (%s, %s, %s, %s, %s)",
        chunks,
    )
    if rng.random() < 0.5:
        thread = _pick_bigint(cur, rng, "threads")
        if thread is not None:
            cur.execute(
                "INSERT INTO thread_content (thread_id, content_item_id, relevance_score) VALUES (%s, %s, %s)",
                (thread, item_id, random_relevance(rng)),
            )
    return True


def _insert_thread(cur: Cursor, rng: random.Random) -> bool:
    project, tenant = _pick_project_and_tenant(cur, rng)
    if tenant is None:
        return False
    parent = _pick_bigint(cur, rng, "threads") if rng.random() < 0.3 else None
    cur.execute(
        "INSERT INTO threads (tenant_id, project_id, parent_thread_id, created_by, title)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (
            tenant,
            _maybe(rng, 0.7, project),
            parent,
            _maybe(rng, 0.9, _pick_uuid(cur, rng, "users")),
            _maybe(rng, 0.85, random_title(rng)),
        ),
    )
    row = cur.fetchone()
    assert row is not None
    if rng.random() < 0.5:
        item = _pick_bigint(cur, rng, "content_items")
        if item is not None:
            cur.execute(
                "INSERT INTO thread_content (thread_id, content_item_id, relevance_score) VALUES (%s, %s, %s)",
                (row[0], item, random_relevance(rng)),
            )
    return True


def _insert_message(cur: Cursor, rng: random.Random) -> bool:
    thread = _pick_bigint(cur, rng, "threads")
    if thread is None:
        return False
    role = rng.choice(("user", "user", "assistant", "assistant", "system"))
    author = _maybe(rng, 0.9, _pick_uuid(cur, rng, "users")) if role == "user" else None
    body = random_long_text(rng) if rng.random() < 0.02 else random_text(rng, 2, 60)
    cur.execute(
        "INSERT INTO messages (thread_id, author_id, role, body, token_count) VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (thread, author, role, body, token_count(rng, body)),
    )
    row = cur.fetchone()
    assert row is not None
    _link_context(cur, rng, int(row[0]), rng.randint(0, 3))
    return True


def _insert_thread_content(cur: Cursor, rng: random.Random) -> bool:
    thread = _pick_bigint(cur, rng, "threads")
    item = _pick_bigint(cur, rng, "content_items")
    if thread is None or item is None:
        return False
    cur.execute(
        "INSERT INTO thread_content (thread_id, content_item_id, relevance_score) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING",
        (thread, item, random_relevance(rng)),
    )
    return cur.rowcount == 1


def _update_content_title(cur: Cursor, rng: random.Random) -> bool:
    item = _pick_bigint(cur, rng, "content_items")
    if item is None:
        return False
    cur.execute("UPDATE content_items SET title = %s WHERE id = %s", (random_title(rng), item))
    return cur.rowcount == 1


def _update_content_body(cur: Cursor, rng: random.Random) -> bool:
    item = _pick_bigint(cur, rng, "content_items")
    if item is None:
        return False
    draw = rng.random()
    body = None if draw < 0.05 else random_long_text(rng) if draw < 0.10 else random_text(rng, 20, 120)
    cur.execute("UPDATE content_items SET body = %s, tags = %s WHERE id = %s", (body, random_tags(rng), item))
    return cur.rowcount == 1


def _update_message_body(cur: Cursor, rng: random.Random) -> bool:
    message = _pick_bigint(cur, rng, "messages")
    if message is None:
        return False
    body = random_long_text(rng) if rng.random() < 0.02 else random_text(rng, 2, 60)
    cur.execute(
        "UPDATE messages SET body = %s, token_count = %s WHERE id = %s",
        (body, token_count(rng, body), message),
    )
    return cur.rowcount == 1


def _update_relevance(cur: Cursor, rng: random.Random) -> bool:
    link = _pick_thread_content(cur, rng)
    if link is None:
        return False
    cur.execute(
        "UPDATE thread_content SET relevance_score = %s WHERE thread_id = %s AND content_item_id = %s",
        (random_relevance(rng), *link),
    )
    return cur.rowcount == 1


def _update_display_name(cur: Cursor, rng: random.Random) -> bool:
    user = _pick_uuid(cur, rng, "users")
    if user is None:
        return False
    cur.execute("UPDATE users SET display_name = %s WHERE id = %s", (random_display_name(rng), user))
    return cur.rowcount == 1


def _move_message(cur: Cursor, rng: random.Random) -> bool:
    message = _pick_bigint(cur, rng, "messages")
    thread = _pick_bigint(cur, rng, "threads")
    if message is None or thread is None:
        return False
    cur.execute("UPDATE messages SET thread_id = %s WHERE id = %s AND thread_id <> %s", (thread, message, thread))
    return cur.rowcount == 1


def _clear_project(cur: Cursor, rng: random.Random) -> bool:
    table = rng.choice(("content_items", "threads"))
    row_id = _pick_bigint(cur, rng, table, sql.SQL("project_id IS NOT NULL"))
    if row_id is None:
        return False
    cur.execute(sql.SQL("UPDATE {} SET project_id = NULL WHERE id = %s").format(sql.Identifier(table)), (row_id,))
    return cur.rowcount == 1


def _delete_message(cur: Cursor, rng: random.Random) -> bool:
    message = _pick_bigint(cur, rng, "messages")
    if message is None:
        return False
    cur.execute("DELETE FROM messages WHERE id = %s", (message,))
    return cur.rowcount == 1


def _delete_content(cur: Cursor, rng: random.Random) -> bool:
    item = _pick_bigint(cur, rng, "content_items")
    if item is None:
        return False
    cur.execute("DELETE FROM content_items WHERE id = %s", (item,))
    return cur.rowcount == 1


def _delete_thread_content(cur: Cursor, rng: random.Random) -> bool:
    link = _pick_thread_content(cur, rng)
    if link is None:
        return False
    cur.execute("DELETE FROM thread_content WHERE thread_id = %s AND content_item_id = %s", link)
    return cur.rowcount == 1


_OPERATION_FUNCTIONS: dict[str, Callable[[Cursor, random.Random], bool]] = {
    "insert_content": _insert_content,
    "insert_thread": _insert_thread,
    "insert_message": _insert_message,
    "insert_thread_content": _insert_thread_content,
    "update_content_title": _update_content_title,
    "update_content_body": _update_content_body,
    "update_message_body": _update_message_body,
    "update_relevance": _update_relevance,
    "update_display_name": _update_display_name,
    "move_message": _move_message,
    "clear_project": _clear_project,
    "delete_message": _delete_message,
    "delete_content": _delete_content,
    "delete_thread_content": _delete_thread_content,
}
_NAMES = tuple(name for name, _ in OPERATIONS)
_WEIGHTS = tuple(weight for _, weight in OPERATIONS)


def empty_counts() -> dict[str, int]:
    """A zeroed counter with every operation kind and outcome."""
    return dict.fromkeys((*_NAMES, *OUTCOMES), 0)


def _run_one(conn: psycopg.Connection[Any], rng: random.Random, counts: dict[str, int]) -> None:
    """Draw one operation and run it in its own transaction, updating ``counts``."""
    name = rng.choices(_NAMES, _WEIGHTS)[0]
    try:
        with conn.transaction(), conn.cursor() as cur:
            done = _OPERATION_FUNCTIONS[name](cur, rng)
    except _CONFLICTS:
        counts["conflicts"] += 1
        return
    counts[name if done else "skipped"] += 1


def _require_idle(conn: psycopg.Connection[Any]) -> None:
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError(
            "the connection has a transaction open; commit or roll it back first, since every"
            " workload operation commits on its own"
        )


def live_burst(conn: psycopg.Connection[Any], operations: int, seed: int = 7) -> dict[str, int]:
    """Run ``operations`` random writes on the existing demo data, each in its own committed transaction.

    ``conn`` must have no transaction open. Returns how many of each operation kind took effect, plus
    ``skipped`` and ``conflicts`` (see the module docstring); the values sum to ``operations``.
    """
    _require_idle(conn)
    rng = random.Random(seed)
    counts = empty_counts()
    for _ in range(operations):
        _run_one(conn, rng, counts)
    return counts


def writer_loop(dsn: str, seconds: float, rate: float | None, seed: int) -> dict[str, int]:
    """Run workload operations on a connection of its own for ``seconds``, at most ``rate`` per second
    (None: as fast as possible).

    Survives the server going away: a lost connection is counted in ``connection_errors`` and reopened
    (the operation in flight may or may not have committed). Returns the counts as ``live_burst`` does,
    plus ``connection_errors``.
    """
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be positive or None, not {rate}")
    rng = random.Random(seed)
    counts = empty_counts()
    counts["connection_errors"] = 0
    interval = 0.0 if rate is None else 1.0 / rate
    deadline = time.monotonic() + seconds
    next_at = time.monotonic()
    conn: psycopg.Connection[Any] | None = None
    try:
        while (now := time.monotonic()) < deadline:
            if conn is None:
                try:
                    conn = psycopg.connect(dsn, connect_timeout=5)
                except psycopg.OperationalError:
                    counts["connection_errors"] += 1
                    time.sleep(max(0.0, min(0.5, deadline - time.monotonic())))
                    continue
            if interval:
                if next_at > now:
                    time.sleep(min(next_at, deadline) - now)
                    if time.monotonic() >= deadline:
                        break
                next_at = max(next_at + interval, time.monotonic() - 1.0)  # no catch-up storms
            try:
                _run_one(conn, rng, counts)
            except psycopg.OperationalError:
                counts["connection_errors"] += 1
                conn.close()
                conn = None
    finally:
        if conn is not None:
            conn.close()
    return counts
