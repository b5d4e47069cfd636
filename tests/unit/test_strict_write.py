"""Unit tests of `pg2neo.coordinate.write.strict_write` (no servers): a strict commit's marker and graph batch as one
Cypher statement.

The statement must create the marker first, claim the epoch, then run the writer's own statements in the writer's
order, each over its own parameter, and only for the writes the batch has; a batch too big for one statement is
left to the writer's chunks.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, cast

from neo4j import Driver, Transaction
from plan_builder import schema_plan

from pg2neo.apply.batch import BatchBuilder, GraphBatch
from pg2neo.apply.cypher import EPOCH_CLAIM, MARKER_CREATE
from pg2neo.apply.writer import STATEMENT_ROWS, GraphWriter
from pg2neo.coordinate.write import strict_write
from pg2neo.mapping.plan import JoinTable, Mapping, NodeTable

AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def entry_of(mapping: Mapping, table: str) -> NodeTable | JoinTable:
    entry = mapping.entry(f"public.{table}")
    assert entry is not None, table
    return entry


def batch_of(mapping: Mapping, rows: dict[str, list[tuple[object, ...]]], gone: dict[str, list[str]]) -> GraphBatch:
    """Rows as the reader selects them (upserts) and keys whose rows are gone (deletes), per table, as one batch."""
    builder = BatchBuilder(mapping)
    batch = builder.new_batch()
    for table, table_rows in rows.items():
        builder.add_rows(batch, entry_of(mapping, table), table_rows)
    for table, keys in gone.items():
        builder.add_deletes(batch, entry_of(mapping, table), [(k,) for k in keys])
    return batch


def writer_of(mapping: Mapping) -> GraphWriter:
    return GraphWriter(cast(Driver, None), mapping)  # builds statements only; no server is reached


class RecordingTransaction:
    """Stands in for a Neo4j transaction in `GraphWriter.write_in`: records each statement and its parameters."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, dict[str, Any]]] = []

    def run(self, query: str, parameters: dict[str, Any] | None = None, **kw: Any) -> RecordingTransaction:
        self.runs.append((query, {**(parameters or {}), **kw}))
        return self

    def single(self) -> dict[str, Any]:
        return {"high": None, "applied": 0, "refused": 0}

    def consume(self) -> None:
        return None


def test_marker_epoch_claim_then_the_writers_own_statements_in_its_order(tmp_path: Path) -> None:
    """The subqueries are what `GraphWriter.write_in` sends for the same batch, statement for statement and row for
    row: if the writer changes, this fails rather than strict mode writing something else."""
    mapping = schema_plan(tmp_path)
    writer = writer_of(mapping)
    # projects: key text, id, tenant_id, title, the tenant's node key; tagged: key text, its columns, its ends' keys
    batch = batch_of(
        mapping,
        {"projects": [(["1"], 1, 7, "alpha", 7)], "tagged": [(["5"], 5, 1, 7, 2, 1, 7)]},
        {"tenants": ["9"]},
    )
    recorded = RecordingTransaction()
    writer.write_in(cast(Transaction, recorded), batch, 42, AT, None)
    claim, *statements = recorded.runs
    assert claim == (EPOCH_CLAIM, {"epoch": 42})
    assert len(statements) == 5, "a delete, an upsert, a link, a join clear, a join upsert"

    one = strict_write(writer, batch, "pg2neo:db:abc", 42, AT)
    assert one is not None
    assert one.query.startswith(MARKER_CREATE + "\n"), "the marker comes first: it holds the gid against a veto"
    at = one.query.index(EPOCH_CLAIM)
    for i, (statement, params) in enumerate(statements):
        name = "keys" if "$keys" in statement else "rows"
        found = one.query.index(statement.replace(f"${name}", f"$w{i}"), at)
        assert found > at, f"statement {i} out of the writer's order"
        at = found
        assert one.params[f"w{i}"] == params[name]
        assert {k: v for k, v in params.items() if k != name} == {"epoch": 42, "synced_at": AT}
    assert one.query.rstrip().endswith("RETURN high")
    assert not re.search(r"\$(rows|keys)\b", one.query), "every writer statement got its own parameter"
    assert {k: one.params[k] for k in ("gid", "epoch", "synced_at")} == {
        "gid": "pg2neo:db:abc",
        "epoch": 42,
        "synced_at": AT,
    }


def test_writes_the_batch_does_not_have_are_not_sent(tmp_path: Path) -> None:
    mapping = schema_plan(tmp_path)
    writer = writer_of(mapping)
    one = strict_write(writer, batch_of(mapping, {"tenants": [(["1"], 1, "acme")]}, {}), "g", 1, AT)
    assert one is not None
    assert one.query.count("CALL () {") == 2, "the epoch claim and the one upsert, nothing else"
    assert set(one.params) == {"w0", "gid", "epoch", "synced_at"}
    # a join row deleted: its clear only, with no ends (any relationship of that key goes)
    deleted = strict_write(writer, batch_of(mapping, {}, {"tagged": ["5"]}), "g", 1, AT)
    assert deleted is not None
    assert writer.join_cypher["public.tagged"].clear.replace("$rows", "$w0") in deleted.query
    assert writer.join_cypher["public.tagged"].upsert.replace("$rows", "$w1") not in deleted.query
    assert deleted.params["w0"] == [{"key": '["5"]', "a": None, "b": None}]


def test_a_batch_bigger_than_one_statement_is_left_to_the_writers_chunks(tmp_path: Path) -> None:
    mapping = schema_plan(tmp_path)
    rows: list[tuple[object, ...]] = [([str(i)], i, f"t{i}") for i in range(STATEMENT_ROWS + 1)]
    assert strict_write(writer_of(mapping), batch_of(mapping, {"tenants": rows}, {}), "g", 1, AT) is None
    fits = rows[:STATEMENT_ROWS]
    assert strict_write(writer_of(mapping), batch_of(mapping, {"tenants": fits}, {}), "g", 1, AT) is not None
