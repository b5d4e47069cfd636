"""The export side of a bulk load: one part of one mapped table, read with `COPY` from the load's exported
PostgreSQL snapshot, mapped by the apply core's rules and written as import CSV (runtime/bulk_csv.py).

Runs in worker processes (`python -m pg2neo.runtime.bulk_export`, its parts pickled on stdin and its results
pickled on stdout; `runtime/bulk.py` starts them), so that several parts are mapped on several cores. Each part
opens its own REPEATABLE READ transaction on the exported snapshot, so every part of every table sees the same
committed state.
Rows are read exactly as the snapshot pages read them (the reader's select list, the pinned session settings and
loaders) and mapped by `BatchBuilder`, so the properties, the content hash and the relationships are the ones the
Bolt writer would write. What the CSV cannot carry (bulk_csv.NotInCsv) is kept, as read, for a Bolt write after the
import; a row the mapping refuses is a dead letter, and its key, when convertible, a key-only node that the
relationships pointing at it need (the Bolt writer MERGEs such a node too).
"""

from __future__ import annotations

import datetime as dt
import json
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pg2neo.apply.batch import BatchBuilder, GraphBatch, RowFailure
from pg2neo.apply.core import ReadRow
from pg2neo.apply.cypher import HASH_PROP
from pg2neo.apply.reader import _base_query
from pg2neo.capture.session import prepare_connection
from pg2neo.mapping.convert import converter
from pg2neo.mapping.plan import JoinTable, Mapping, NodeTable
from pg2neo.runtime.bulk_csv import bolt_only_props, node_id, props_fields, scalar_field, stamp_fields

CONVERT_ROWS = 2000  # rows mapped per BatchBuilder batch


@dataclass(frozen=True)
class ExportPart:
    """One part of one table: the rows in heap blocks [first_block, end_block) (None: to the end)."""

    dsn: str
    snapshot: str
    mapping: Mapping
    table: str
    part: int
    first_block: int | None
    end_block: int | None
    out_dir: str
    epoch: int
    synced_at: dt.datetime

    def path(self, kind: str) -> Path:
        return Path(self.out_dir) / f"{kind}-{self.mapping.tables.index(self.table)}-{self.part}.csv"


@dataclass
class PartResult:
    table: str
    part: int
    rows: int = 0
    files: dict[str, str] = field(default_factory=dict)  # kind -> data file
    multiline: list[str] = field(default_factory=list)
    dead: list[RowFailure] = field(default_factory=list)
    stub_keys: list[list[Any]] = field(default_factory=list)
    bolt_rows: int = 0
    bolt_file: str | None = None  # pickled rows, as read, to write through Bolt after the import
    seconds: float = 0.0


def scan_query(mapping: Mapping, entry: NodeTable | JoinTable, first: int | None, end: int | None) -> sql.Composed:
    """The snapshot pages' select list over a range of heap blocks, in no order (for `COPY`)."""
    fields, joins = _base_query(mapping, entry)
    where: list[sql.Composable] = []
    if first is not None:
        where.append(sql.SQL("t.ctid >= {}::tid").format(sql.Literal(f"({first},0)")))
    if end is not None:
        where.append(sql.SQL("t.ctid < {}::tid").format(sql.Literal(f"({end},0)")))
    condition = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")
    return sql.SQL("SELECT {fields} FROM {table} AS t {joins}{where}").format(
        fields=sql.SQL(", ").join(fields),
        table=sql.Identifier(entry.schema, entry.name),
        joins=sql.SQL(" ").join(joins.clauses),
        where=condition,
    )


class _Files:
    """The part's CSV files, opened on first write; notes which hold a line break inside a field."""

    def __init__(self, part: ExportPart, result: PartResult) -> None:
        self.part = part
        self.result = result
        self._open: dict[str, Any] = {}
        self._multiline: set[str] = set()

    def write(self, kind: str, line: str) -> None:
        out = self._open.get(kind)
        if out is None:
            path = self.part.path(kind)
            out = self._open[kind] = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115
            self.result.files[kind] = str(path)
        if "\n" in line or "\r" in line:
            self._multiline.add(kind)
        out.write(line)
        out.write("\n")

    def close(self) -> None:
        for out in self._open.values():
            out.close()
        self.result.multiline = [self.result.files[k] for k in sorted(self._multiline)]


def export_part(part: ExportPart) -> PartResult:
    """Read one part from the exported snapshot and write its CSV files (in a worker process)."""
    started = time.monotonic()
    result = PartResult(part.table, part.part)
    entry = part.mapping.entry(part.table)
    assert entry is not None
    mapper = _PartMapper(part, entry, result)
    with psycopg.connect(part.dsn, autocommit=True, application_name="pg2neo-bulk") as conn:
        prepare_connection(conn)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(part.snapshot)))
            query = scan_query(part.mapping, entry, part.first_block, part.end_block)
            with conn.cursor() as cur:
                cur.execute(sql.SQL("{} LIMIT 0").format(query))
                types = [d.type_code for d in cur.description or []]
                with cur.copy(sql.SQL("COPY ({}) TO STDOUT").format(query)) as copy:
                    copy.set_types(types)
                    rows: list[tuple[Any, ...]] = []
                    for row in copy.rows():
                        rows.append(row)
                        if len(rows) >= CONVERT_ROWS:
                            mapper.add(rows)
                            rows = []
                    if rows:
                        mapper.add(rows)
    mapper.close()
    result.seconds = time.monotonic() - started
    return result


class _PartMapper:
    def __init__(self, part: ExportPart, entry: NodeTable | JoinTable, result: PartResult) -> None:
        self.part = part
        self.entry = entry
        self.result = result
        self.builder = BatchBuilder(part.mapping)
        self.files = _Files(part, result)
        self.stamps = stamp_fields(part.epoch, part.synced_at)
        self.bolt_only = bolt_only_props(entry.columns)
        self.bolt_rows: list[ReadRow] = []
        if isinstance(entry, JoinTable):
            self.columns = tuple(c for c in entry.columns if c.prop in entry.props)
        else:
            self.columns = entry.columns
            self.key_converters = [(entry.columns.index(c), converter(c)) for c in entry.key_column_objs]

    def add(self, rows: list[tuple[Any, ...]]) -> None:
        self.result.rows += len(rows)
        batch = self.builder.new_batch()
        self.builder.add_rows(batch, self.entry, rows)
        if isinstance(self.entry, NodeTable):
            late = self._nodes(batch.nodes.get(self.entry.table))
        else:
            late = self._joins(batch.joins.get(self.entry.table))
        if late or batch.failures:
            by_key = {tuple(row[0]): row for row in rows}
            if late and isinstance(self.entry, NodeTable):
                # the rows' text keys by their converted node keys (the upserts carry only the latter)
                dead = failed(batch)
                texts = {node_id(self._node_key(row)): key for key, row in by_key.items() if key not in dead}
                late = [texts[node_id(k)] for k in late]
            for key in late:
                self.bolt_rows.append(ReadRow(self.entry, tuple(key), by_key[tuple(key)]))
            for failure in batch.failures:
                self.result.dead.append(failure)
                if isinstance(self.entry, NodeTable):
                    self._stub(by_key[failure.key])

    def _node_key(self, row: tuple[Any, ...]) -> list[Any]:
        return [fn(row[1 + index]) for index, fn in self.key_converters]

    def _nodes(self, writes: Any) -> list[Any]:
        """Write the node lines and their links; returns the node keys of rows left for Bolt."""
        late: list[Any] = []
        if writes is None:
            return late
        assert isinstance(self.entry, NodeTable)
        rels = self.entry.fk_rels
        for index, upsert in enumerate(writes.upserts):
            props = upsert["p"]
            ident = node_id(upsert["k"])
            fields, missing = props_fields(self.columns, props, self.bolt_only)
            self.files.write("nodes", f"{ident},{fields},{scalar_field(props[HASH_PROP])},{self.stamps}")
            if missing:
                late.append(upsert["k"])
            for at, rel in enumerate(rels):
                target = writes.links[at][index]["t"]
                if target is None:
                    continue
                other = node_id(target)
                line = f"{ident},{other}" if rel.direction == "out" else f"{other},{ident}"
                self.files.write(f"link{at}", line)
        return late

    def _joins(self, writes: Any) -> list[Any]:
        """Write the relationship lines; returns the row keys of rows left for Bolt."""
        late: list[Any] = []
        if writes is None:
            return late
        for upsert in writes.upserts:
            fields, missing = props_fields(self.columns, upsert["p"], self.bolt_only)
            rel_key = scalar_field(upsert["key"])
            line = f"{node_id(upsert['a'])},{node_id(upsert['b'])},{fields},{rel_key},{self.stamps}"
            self.files.write("rels", line)
            if missing:
                late.append(json.loads(upsert["key"]))
        return late

    def _stub(self, row: tuple[Any, ...]) -> None:
        """A node row the mapping refused: its key alone, for the relationships that MERGE it (dropped after the
        import when none does)."""
        try:
            key = self._node_key(row)
        except Exception:
            return  # the key itself cannot be converted: the rows pointing at it are dead letters too
        fields = ",".join(scalar_field(v) for v in key)
        self.files.write("stubs", f"{node_id(key)},{fields}")
        self.result.stub_keys.append(key)

    def close(self) -> None:
        self.files.close()
        if self.bolt_rows:
            path = self.part.path("bolt").with_suffix(".pickle")
            path.write_bytes(pickle.dumps(self.bolt_rows, protocol=pickle.HIGHEST_PROTOCOL))
            self.result.bolt_file = str(path)
            self.result.bolt_rows = len(self.bolt_rows)


def failed(batch: GraphBatch) -> set[tuple[str, ...]]:
    return {f.key for f in batch.failures}


def main() -> None:
    """A worker process: export the pickled parts read from stdin, one after the other; pickle the results out."""
    parts: list[ExportPart] = pickle.loads(sys.stdin.buffer.read())  # from our own parent process
    results = [export_part(part) for part in parts]
    sys.stdout.buffer.write(pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    # Run as `python -m`: call the module imported under its own name, so that what it pickles is found again.
    from pg2neo.runtime import bulk_export

    bulk_export.main()
