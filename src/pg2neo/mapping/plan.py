"""The resolved mapping: what every other stage works from (frozen, checked against the catalog)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from functools import cached_property


class ValueKind(enum.Enum):
    INT = "int"
    FLOAT = "float"
    NUMERIC = "numeric"
    BOOL = "bool"
    TEXT = "text"
    UUID = "uuid"
    BYTES = "bytes"
    DATE = "date"
    TIMESTAMP = "timestamp"
    TIMESTAMPTZ = "timestamptz"
    TIME = "time"
    TIMETZ = "timetz"
    INTERVAL = "interval"
    JSON = "json"
    ARRAY = "array"


class SelectAs(enum.Enum):
    """How the reader selects a column so that psycopg hands over a value we can convert exactly."""

    RAW = "raw"
    TEXT = "text"  # PostgreSQL's own text form (enums, intervals, json, types Neo4j has no equivalent for)
    TEXT_ARRAY = "text[]"
    FLOAT = "float8"
    JSONB_TEXT = "jsonb"  # to_jsonb(col)::text


@dataclass(frozen=True)
class Column:
    name: str
    prop: str
    type_name: str
    kind: ValueKind
    select_as: SelectAs
    element_kind: ValueKind | None = None
    # `IS DISTINCT FROM` on the column sees every change of its mapped value; when False the capture compares the
    # column's text (no btree equality, or an equality that holds between different forms, e.g. numeric 1.5/1.50).
    comparable: bool = True


@dataclass(frozen=True)
class ForeignKeyRel:
    """(this node)-[:TYPE]->(target) when direction is "out", (target)-[:TYPE]->(this node) when "in"."""

    type: str
    columns: tuple[str, ...]
    target_table: str
    target_label: str
    target_key_props: tuple[str, ...]
    # How the target's node key is found from this row: straight from `columns` when they reference the target's
    # key columns, otherwise through a join on `ref_columns` to read `target_key_columns`.
    ref_columns: tuple[str, ...]
    target_key_columns: tuple[str, ...]
    direction: str = "out"

    @property
    def needs_join(self) -> bool:
        return self.ref_columns != self.target_key_columns


@dataclass(frozen=True)
class NodeTable:
    table: str  # schema-qualified
    schema: str
    name: str
    labels: tuple[str, ...]
    key_columns: tuple[str, ...]
    key_props: tuple[str, ...]
    key_types: tuple[str, ...]
    columns: tuple[Column, ...]
    fk_rels: tuple[ForeignKeyRel, ...] = ()
    version_column: str | None = None
    updated_at_column: str | None = None
    line: int = 0

    @property
    def label(self) -> str:
        return self.labels[0]

    @property
    def key_column_objs(self) -> tuple[Column, ...]:
        by_name = {c.name: c for c in self.columns}
        return tuple(by_name[name] for name in self.key_columns)

    @cached_property
    def epoch_props(self) -> tuple[str, ...]:
        """timestamptz properties (not keys) sent as [epoch seconds, nanoseconds] and made DateTimes in Cypher.

        The driver turns Python datetimes into Bolt values in pure Python, which profiling showed to be a fifth of
        the apply loop's time; two integers cost next to nothing.
        """
        return tuple(c.prop for c in self.columns if c.kind is ValueKind.TIMESTAMPTZ and c.prop not in self.key_props)


@dataclass(frozen=True)
class Endpoint:
    table: str
    label: str
    key_props: tuple[str, ...]
    columns: tuple[str, ...]  # the join table's foreign-key columns
    ref_columns: tuple[str, ...]
    target_key_columns: tuple[str, ...]

    @property
    def needs_join(self) -> bool:
        return self.ref_columns != self.target_key_columns


@dataclass(frozen=True)
class JoinTable:
    table: str
    schema: str
    name: str
    type: str
    key_columns: tuple[str, ...]
    key_types: tuple[str, ...]
    start: Endpoint
    end: Endpoint
    columns: tuple[Column, ...]  # every column read; `props` says which become relationship properties
    props: tuple[str, ...]
    line: int = 0


@dataclass(frozen=True)
class Mapping:
    nodes: tuple[NodeTable, ...]
    joins: tuple[JoinTable, ...]
    source: str = ""
    _by_table: dict[str, NodeTable | JoinTable] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for entry in self.entries:
            self._by_table[entry.table] = entry

    @property
    def entries(self) -> tuple[NodeTable | JoinTable, ...]:
        """Node tables first (in mapping order), then join tables: the order snapshots load them in."""
        return (*self.nodes, *self.joins)

    def entry(self, table: str) -> NodeTable | JoinTable | None:
        return self._by_table.get(table)

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(self._by_table)

    def node(self, table: str) -> NodeTable:
        entry = self._by_table[table]
        assert isinstance(entry, NodeTable)
        return entry
