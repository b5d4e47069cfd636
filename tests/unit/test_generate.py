"""Unit tests of the demo data generator's pure row generators (no database)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from operator import itemgetter
from typing import Any
from uuid import UUID

import pytest

from pg2neo.demo.generate import (
    COLUMNS,
    IDENTITY_TABLES,
    LONG_BODY_MIN_CHARS,
    SCHEMA_SQL,
    TABLES,
    Plan,
    iter_rows,
    plan,
)

Rows = dict[str, list[tuple[Any, ...]]]
Dicts = dict[str, list[dict[str, Any]]]

# Nullable columns per table, as in schema.sql (the generator fills every one of them with NULL sometimes).
NULLABLE: dict[str, tuple[str, ...]] = {
    "tenants": ("plan",),
    "users": ("display_name",),
    "programs": ("description", "starts_on"),
    "projects": ("program_id", "description", "budget"),
    "content_items": ("project_id", "author_id", "description", "body", "tags", "metadata"),
    "content_chunks": ("token_count", "embedding"),
    "threads": ("project_id", "parent_thread_id", "created_by", "title"),
    "messages": ("author_id", "token_count"),
    "thread_content": (),
    "message_context": (),
}

# (child table, column) -> parent table whose id it refers to.
FOREIGN_KEYS: dict[tuple[str, str], str] = {
    ("users", "tenant_id"): "tenants",
    ("programs", "tenant_id"): "tenants",
    ("projects", "tenant_id"): "tenants",
    ("projects", "program_id"): "programs",
    ("content_items", "tenant_id"): "tenants",
    ("content_items", "project_id"): "projects",
    ("content_items", "author_id"): "users",
    ("content_chunks", "content_item_id"): "content_items",
    ("threads", "tenant_id"): "tenants",
    ("threads", "project_id"): "projects",
    ("threads", "parent_thread_id"): "threads",
    ("threads", "created_by"): "users",
    ("messages", "thread_id"): "threads",
    ("messages", "author_id"): "users",
    ("thread_content", "thread_id"): "threads",
    ("thread_content", "content_item_id"): "content_items",
    ("message_context", "message_id"): "messages",
    ("message_context", "chunk_id"): "content_chunks",
}

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    **{table: ("id",) for table in TABLES},
    "thread_content": ("thread_id", "content_item_id"),
    "message_context": ("message_id", "chunk_id"),
}


@cache
def rows_for(scale: int, seed: int = 42) -> Rows:
    p = plan(scale, seed)
    return {table: list(iter_rows(p, table)) for table in TABLES}


def dicts_for(scale: int, seed: int = 42) -> Dicts:
    return {
        table: [dict(zip(COLUMNS[table], row, strict=True)) for row in rows]
        for table, rows in rows_for(scale, seed).items()
    }


@pytest.fixture(scope="module")
def data() -> Dicts:
    return dicts_for(500)


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


# ------------------------------------------------------------------------------------------------------
# Shape and determinism
# ------------------------------------------------------------------------------------------------------


def test_tables_in_dependency_order() -> None:
    position = {table: i for i, table in enumerate(TABLES)}
    assert len(TABLES) == 10
    assert set(COLUMNS) == set(TABLES)
    for (child, _), parent in FOREIGN_KEYS.items():
        assert position[parent] <= position[child]


def test_columns_exist_in_schema() -> None:
    for table, columns in COLUMNS.items():
        match = re.search(rf"CREATE TABLE {table} \((.*?)\n\);", SCHEMA_SQL, re.S)
        assert match is not None, table
        declared = {line.split()[0] for line in match.group(1).strip().splitlines()}
        assert set(columns) <= declared, (table, set(columns) - declared)
        assert "version" not in columns  # left to its default


def test_rows_match_columns() -> None:
    for table, rows in rows_for(50).items():
        assert rows, table
        assert all(len(row) == len(COLUMNS[table]) for row in rows), table


def test_same_seed_same_rows() -> None:
    first = {t: list(iter_rows(plan(120, 3), t)) for t in TABLES}
    second = {t: list(iter_rows(plan(120, 3), t)) for t in TABLES}
    assert first == second


def test_different_seed_different_rows() -> None:
    one, other = rows_for(120, 1), rows_for(120, 2)
    for table in ("tenants", "users", "content_items", "content_chunks", "messages"):
        assert one[table] != other[table], table
    assert {r[0] for r in one["users"]}.isdisjoint(r[0] for r in other["users"])


def test_tables_generate_independently() -> None:
    p = plan(80, 9)
    alone = list(iter_rows(p, "messages"))
    for table in TABLES:
        list(iter_rows(p, table))
    assert list(iter_rows(p, "messages")) == alone


def test_uuids_are_version_4() -> None:
    data = dicts_for(100)
    uuids = [row["id"] for t in ("tenants", "users", "programs", "projects") for row in data[t]]
    uuids += [row["neo4j_node_id"] for t in IDENTITY_TABLES for row in data[t]]
    assert all(isinstance(u, UUID) and u.version == 4 and u.variant == "specified in RFC 4122" for u in uuids)


def test_unknown_table_and_bad_scale() -> None:
    with pytest.raises(ValueError, match="unknown table"):
        iter_rows(plan(10), "nope")
    with pytest.raises(ValueError, match="scale"):
        plan(0)


# ------------------------------------------------------------------------------------------------------
# Counts and ratios
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1, 2, 10, 37])
def test_tiny_scales_have_every_table(scale: int) -> None:
    rows = rows_for(scale)
    for table in TABLES:
        assert rows[table], (scale, table)
    for table in ("tenants", "users", "programs", "projects", "threads"):
        assert len(rows[table]) >= 2, (scale, table)
    assert len(rows["content_items"]) == scale
    for table in ("tenants", "programs", "projects"):
        for column in NULLABLE[table]:
            position = COLUMNS[table].index(column)
            assert any(row[position] is None for row in rows[table]), (scale, table, column)


def test_plan_counts_match_rows() -> None:
    p: Plan = plan(300, 5)
    rows = rows_for(300, 5)
    assert len(rows["tenants"]) == len(p.tenant_ids)
    assert len(rows["users"]) == len(p.user_ids)
    assert len(rows["programs"]) == len(p.program_ids)
    assert len(rows["projects"]) == len(p.project_ids)
    assert len(rows["content_items"]) == p.content_count
    assert len(rows["content_chunks"]) == p.chunk_count
    assert len(rows["threads"]) == p.thread_count
    assert len(rows["messages"]) == p.message_count


def test_ratios_at_scale(data: Dicts) -> None:
    scale = 500
    n = {table: len(rows) for table, rows in data.items()}
    assert n["content_items"] == scale
    assert n["tenants"] == 2
    assert n["users"] == scale // 5
    assert n["programs"] == scale // 50
    assert n["projects"] == scale // 10
    assert n["threads"] == scale // 2
    assert 3.5 * scale <= n["content_chunks"] <= 4.5 * scale
    assert 2.6 * scale <= n["messages"] <= 3.4 * scale
    assert 0.85 * scale <= n["thread_content"] <= 1.15 * scale
    assert 1.7 * scale <= n["message_context"] <= 2.3 * scale
    assert 11 * scale <= sum(n.values()) <= 13 * scale


def test_plan_at_one_million_rows() -> None:
    p = plan(85_000)
    total = len(p.tenant_ids) + len(p.user_ids) + len(p.program_ids) + len(p.project_ids) + p.content_count
    total += p.chunk_count + p.thread_count + p.message_count
    # the two join tables add about 3 × scale
    assert 0.95e6 <= total + 3 * 85_000 <= 1.05e6


# ------------------------------------------------------------------------------------------------------
# Integrity
# ------------------------------------------------------------------------------------------------------


def test_foreign_keys_refer_to_generated_rows(data: Dicts) -> None:
    ids = {table: {row["id"] for row in data[table]} for table in TABLES if "id" in COLUMNS[table]}
    for (child, column), parent in FOREIGN_KEYS.items():
        values = [row[column] for row in data[child]]
        if column not in NULLABLE[child]:
            assert None not in values, (child, column)
        dangling = {v for v in values if v is not None} - ids[parent]
        assert not dangling, (child, column, sorted(map(str, dangling))[:5])


def test_primary_and_unique_keys(data: Dicts) -> None:
    def assert_unique(table: str, key: Callable[[dict[str, Any]], Any]) -> None:
        counts = Counter(key(row) for row in data[table])
        duplicates = [k for k, c in counts.items() if c > 1]
        assert not duplicates, (table, duplicates[:5])

    for table, columns in PRIMARY_KEYS.items():
        assert_unique(table, itemgetter(*columns))
    for table in IDENTITY_TABLES:
        assert_unique(table, lambda row: row["neo4j_node_id"])
        assert [row["id"] for row in data[table]] == list(range(1, len(data[table]) + 1))
    assert_unique("users", lambda row: row["email"])
    assert_unique("content_chunks", lambda row: (row["content_item_id"], row["chunk_index"]))


def test_chunk_indexes_are_dense(data: Dicts) -> None:
    by_item: dict[int, list[int]] = {}
    for row in data["content_chunks"]:
        by_item.setdefault(row["content_item_id"], []).append(row["chunk_index"])
    for indexes in by_item.values():
        assert indexes == list(range(len(indexes)))


def test_parent_threads_are_earlier(data: Dicts) -> None:
    parents = [(row["id"], row["parent_thread_id"]) for row in data["threads"] if row["parent_thread_id"]]
    assert len(parents) >= 0.1 * len(data["threads"])
    assert all(parent < child for child, parent in parents)


def test_timestamps_are_ordered(data: Dicts) -> None:
    for table in TABLES:
        if "updated_at" in COLUMNS[table]:
            for row in data[table]:
                assert isinstance(row["created_at"], datetime)
                assert row["created_at"].tzinfo is not None
                assert row["updated_at"] >= row["created_at"]
    threads = {row["id"]: row["created_at"] for row in data["threads"]}
    assert all(row["created_at"] >= threads[row["thread_id"]] for row in data["messages"])
    items = {row["id"]: row["created_at"] for row in data["content_items"]}
    assert all(row["created_at"] >= items[row["content_item_id"]] for row in data["content_chunks"])


def test_every_relationship_kind_present(data: Dicts) -> None:
    for (child, column), _ in FOREIGN_KEYS.items():
        assert any(row[column] is not None for row in data[child]), (child, column)
    roles = Counter(row["role"] for row in data["messages"])
    assert set(roles) == {"user", "assistant", "system"}
    kinds = {row["kind"] for row in data["content_items"]}
    assert kinds == {"document", "video", "audio", "link", "note"}


# ------------------------------------------------------------------------------------------------------
# Realism
# ------------------------------------------------------------------------------------------------------


def test_nulls_in_every_nullable_column(data: Dicts) -> None:
    for table, columns in NULLABLE.items():
        for column in columns:
            values = [row[column] for row in data[table]]
            assert None in values, (table, column)
            assert any(v is not None for v in values), (table, column)
    for table in TABLES:
        for column in set(COLUMNS[table]) - set(NULLABLE[table]):
            assert all(row[column] is not None for row in data[table]), (table, column)


def test_long_bodies(data: Dicts) -> None:
    items = data["content_items"]
    long_items = [r for r in items if r["body"] is not None and utf8_len(r["body"]) > 8192]
    assert long_items and 0.01 <= len(long_items) / len(items) <= 0.04
    assert all(len(r["body"]) >= LONG_BODY_MIN_CHARS for r in long_items)
    messages = data["messages"]
    long_messages = [r for r in messages if utf8_len(r["body"]) > 8192]
    assert long_messages and 0.01 <= len(long_messages) / len(messages) <= 0.04
    # content item 1 is long, so even the smallest scale exercises TOAST
    assert utf8_len(rows_for(1)["content_items"][0][COLUMNS["content_items"].index("body")]) > 8192


def test_non_ascii_text(data: Dicts) -> None:
    text = " ".join(
        [row["title"] for row in data["content_items"]]
        + [row["body"] for row in data["messages"]]
        + [row["display_name"] or "" for row in data["users"]]
    )
    assert re.search(r"[àâçéèêëîïôûùüÿñæœøåäöß]", text, re.I)  # accents
    assert re.search(r"[\u4e00-\u9fff\u3040-\u30ff\uac00-\ud7af]", text)  # CJK
    assert re.search(r"[\U0001F300-\U0001FAFF]", text)  # emoji
    assert re.search(r"[\u0590-\u06ff]", text)  # Hebrew / Arabic (RTL)
    assert "\u0301" in text  # combining accent
    assert "\\" in text and "\t" in text and '"' in text  # COPY and quoting escapes
    assert "\x00" not in text


def test_text_columns_have_no_nul_bytes(data: Dicts) -> None:
    for table in TABLES:
        for row in data[table]:
            for value in row.values():
                if isinstance(value, str):
                    assert "\x00" not in value


def test_tags_metadata_embeddings(data: Dicts) -> None:
    items = data["content_items"]
    tags = [row["tags"] for row in items]
    assert None in tags and [] in tags
    assert any(t and len(t) > 1 for t in tags)
    assert all(t is None or (isinstance(t, list) and len(t) == len(set(t))) for t in tags)
    metadata = [row["metadata"] for row in items if row["metadata"]]
    assert metadata and all(isinstance(m, dict) for m in metadata)
    assert any(isinstance(m.get("stats"), dict) and isinstance(m["origin"]["ref"], dict) for m in metadata)
    embeddings = [row["embedding"] for row in data["content_chunks"] if row["embedding"] is not None]
    assert embeddings
    for embedding in embeddings:
        assert 4 <= len(embedding) <= 8
        assert all(isinstance(x, float) and -2 <= x <= 2 and (x * 1024).is_integer() for x in embedding)


def test_value_types_and_ranges(data: Dicts) -> None:
    scores = [row["relevance_score"] for row in data["thread_content"]]
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    assert len(set(scores)) > len(scores) // 2
    budgets = [row["budget"] for row in data["projects"] if row["budget"] is not None]
    assert all(isinstance(b, Decimal) and b.as_tuple().exponent == -2 and b < Decimal("1e10") for b in budgets)
    starts = [row["starts_on"] for row in data["programs"] if row["starts_on"] is not None]
    assert all(type(d) is date for d in starts)
    assert all(isinstance(row["is_active"], bool) for row in data["users"])
    assert any(not row["is_active"] for row in data["users"])
    ranks = Counter(row["rank"] for row in data["message_context"])
    assert ranks[1] > 0 and ranks[2] > 0
    assert all("@" in row["email"] for row in data["users"])
