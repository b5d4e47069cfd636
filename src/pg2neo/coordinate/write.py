"""Strict mode's graph write as one Cypher statement: the marker, the epoch claim and the batch, in one round trip.

Place in the data flow: the Neo4j half of a strict commit (coordinate/strict.py), which holds the application's
transaction and the apply lock open until it ends. The applier's writer (`GraphWriter.write_in`, apply/writer.py)
sends a batch as one statement per label, operation and chunk, waiting for each: on this machine each one is a round
trip of one to three milliseconds, most of a strict commit. Here the writer's own statements (apply/cypher.py,
unchanged, in the writer's order: node deletes, node upserts, foreign-key links, join clears, join upserts) run as
`CALL () { ... }` subqueries of one statement, after the marker CREATE and the epoch claim:

    CREATE (:_Pg2neoTx {gid: $gid, ...})           -- first: from here on it holds the gid against a veto
    WITH true AS marked
    CALL () { MERGE (h:_Pg2neoEpoch ...) ... RETURN high }
    CALL () { UNWIND $w0 AS r MERGE (n:Person ...) ... RETURN count(*) AS applied } WITH high
    ...
    RETURN high

Clauses run in order on the one row, so each subquery sees the writes before it, as the writer's statements see
those of the statements before them. Every subquery either returns no rows to its caller (a unit subquery) or
ends in an aggregation (exactly one row), so the row reaches `RETURN high`; a missing row is an error, never a
silent skip. The epoch check moves after the writes: when the graph's epoch is newer, the caller rolls the
transaction back (nothing committed) and writes again with a newer epoch, as it does after `write_in`'s check.

A batch with more rows in one statement than the writer's chunk (`STATEMENT_ROWS`) is not combined: the caller
uses `write_in`, which chunks. Statement texts depend only on which writes a batch has, so Neo4j plans each shape
once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pg2neo.apply.batch import GraphBatch
from pg2neo.apply.cypher import EPOCH_CLAIM, MARKER_CREATE
from pg2neo.apply.writer import STATEMENT_ROWS, GraphWriter, epoch_rows


@dataclass(frozen=True)
class StrictWrite:
    """One statement writing the marker and a whole batch; its record's `high` is the graph's epoch before it."""

    query: str
    params: dict[str, Any]


class _Builder:
    def __init__(self) -> None:
        self.parts = [MARKER_CREATE, "WITH true AS marked", f"CALL () {{\n{EPOCH_CLAIM}\n}}"]
        self.params: dict[str, Any] = {}
        self.fits = True

    def add(self, statement: str, name: str, rows: list[Any]) -> None:
        """A writer statement over `rows` as the next subquery, its one `$name` parameter renamed to a fresh one."""
        if not rows:
            return
        renamed = f"w{len(self.params)}"
        if len(rows) > STATEMENT_ROWS or statement.count(f"${name}") != 1 or f"${renamed}" in statement:
            self.fits = False  # the writer chunks it (or its text is not the shape this module knows)
            return
        self.parts.append(f"CALL () {{\n{statement.replace(f'${name}', f'${renamed}')}\n}}\nWITH high")
        self.params[renamed] = rows


def strict_write(
    writer: GraphWriter, batch: GraphBatch, gid: str, epoch: int, synced_at: dt.datetime
) -> StrictWrite | None:
    """The marker and `batch` as one statement (see the module docstring), or None when the batch is too big for one.

    Mirrors `GraphWriter.write_in` of a default writer (strict mode's own) statement for statement, which
    tests/unit/test_strict_write.py checks; the version guards' refusal counts are not returned (strict mode has no
    use for them: its events stay queued and the applier writes them again)."""
    built = _Builder()
    for table, writes in batch.nodes.items():
        built.add(writer.node_cypher[table].delete, "keys", writes.deletes)
    for table, writes in batch.nodes.items():
        built.add(writer.node_cypher[table].upsert, "rows", epoch_rows(writes.upserts, writes.table.epoch_props))
    for table, writes in batch.nodes.items():
        for statement, links in zip(writer.node_cypher[table].links, writes.links, strict=True):
            built.add(statement, "rows", links)
    for table, joins in batch.joins.items():
        clear = [{"key": k, "a": None, "b": None} for k in joins.deletes]
        clear += [{"key": u["key"], "a": u["a"], "b": u["b"]} for u in joins.upserts]
        built.add(writer.join_cypher[table].clear, "rows", clear)
        built.add(writer.join_cypher[table].upsert, "rows", joins.upserts)
    if not built.fits:
        return None
    query = "\n".join([*built.parts, "RETURN high"])
    return StrictWrite(query, {**built.params, "gid": gid, "epoch": epoch, "synced_at": synced_at})
