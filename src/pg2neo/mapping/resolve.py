"""Checks the mapping file against a catalog snapshot and turns it into the resolved `Mapping`.

`resolve` is pure: it reads no database, only the `Catalog` snapshot that catalog.py reads (`read_catalog`) for the
tables the file names (`named_tables`), so it is tested on hand-built catalogs. `load_mapping` is the entry that
reads: the file, then the snapshot from a connection, then `resolve`.

Every problem is collected (not just the first) and reported with the file, the line and what to write instead.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pg2neo.errors import MappingError
from pg2neo.mapping.catalog import Catalog, CatalogColumn, CatalogTable, read_catalog
from pg2neo.mapping.model import JoinRelSpec, LineIndex, MappingFile, NodeSpec, PropertiesSpec, load_file
from pg2neo.mapping.plan import (
    Column,
    Endpoint,
    ForeignKeyRel,
    JoinTable,
    Mapping,
    NodeTable,
    SelectAs,
    ValueKind,
)

if TYPE_CHECKING:
    import psycopg

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_PREFIX = "_pg2neo"

_SCALARS = {
    "int2": ValueKind.INT,
    "int4": ValueKind.INT,
    "int8": ValueKind.INT,
    "oid": ValueKind.INT,
    "float4": ValueKind.FLOAT,
    "float8": ValueKind.FLOAT,
    "numeric": ValueKind.NUMERIC,
    "bool": ValueKind.BOOL,
    "text": ValueKind.TEXT,
    "varchar": ValueKind.TEXT,
    "bpchar": ValueKind.TEXT,
    "name": ValueKind.TEXT,
    "citext": ValueKind.TEXT,
    "uuid": ValueKind.UUID,
    "bytea": ValueKind.BYTES,
    "date": ValueKind.DATE,
    "timestamp": ValueKind.TIMESTAMP,
    "timestamptz": ValueKind.TIMESTAMPTZ,
    "time": ValueKind.TIME,
    "timetz": ValueKind.TIMETZ,
}
_ARRAY_ELEMENTS = {
    ValueKind.INT,
    ValueKind.FLOAT,
    ValueKind.NUMERIC,
    ValueKind.BOOL,
    ValueKind.TEXT,
    ValueKind.UUID,
    ValueKind.DATE,
    ValueKind.TIMESTAMP,
    ValueKind.TIMESTAMPTZ,
}


# Base types whose `=` holds only between values that print (and map) the same. Others have equal values with
# different forms (numeric 1.50 = 1.5, interval '1 day' = '24 hours', citext 'A' = 'a', jsonb, composites and
# ranges of those, types pg2neo does not know): an UPDATE between two such forms changes the Neo4j value, so the
# capture compares them as text.
_EQUALITY_IS_IDENTITY = {
    "int2",
    "int4",
    "int8",
    "oid",
    "float4",
    "float8",
    "bool",
    "text",
    "varchar",
    "bpchar",
    "name",
    "uuid",
    "bytea",
    "date",
    "timestamp",
    "timestamptz",
    "time",
    "timetz",
    "money",
}


def _compares_exactly(col: CatalogColumn) -> bool:
    """Whether `OLD.col IS DISTINCT FROM NEW.col` sees every change of the value pg2neo maps (else `::text`)."""
    if not col.comparable:
        return False
    if col.element_type is not None:
        return col.element_kind == "e" or col.element_type in _EQUALITY_IS_IDENTITY
    return col.type_kind == "e" or col.base_type in _EQUALITY_IS_IDENTITY


def column_plan(col: CatalogColumn, prop: str, override: str = "native") -> Column:
    """How one PostgreSQL column is read and stored in Neo4j (the rules of docs/mapping.md)."""
    plan = _column_plan(col, prop, override)
    exact = _compares_exactly(col)
    return plan if plan.comparable == exact else dataclasses.replace(plan, comparable=exact)


def _column_plan(col: CatalogColumn, prop: str, override: str) -> Column:
    if override == "string":
        return Column(col.name, prop, col.type_name, ValueKind.TEXT, SelectAs.TEXT, comparable=col.comparable)
    if override == "float":
        return Column(col.name, prop, col.type_name, ValueKind.FLOAT, SelectAs.FLOAT, comparable=col.comparable)
    if override == "json":
        return Column(col.name, prop, col.type_name, ValueKind.JSON, SelectAs.JSONB_TEXT, comparable=col.comparable)
    if col.base_type in ("json", "jsonb"):
        return Column(col.name, prop, col.type_name, ValueKind.JSON, SelectAs.TEXT, comparable=col.comparable)
    if col.base_type == "interval":
        return Column(col.name, prop, col.type_name, ValueKind.INTERVAL, SelectAs.TEXT, comparable=col.comparable)
    if col.type_kind == "e":
        return Column(col.name, prop, col.type_name, ValueKind.TEXT, SelectAs.TEXT, comparable=col.comparable)
    scalar = _SCALARS.get(col.base_type)
    if scalar is not None:
        return Column(col.name, prop, col.type_name, scalar, SelectAs.RAW, comparable=col.comparable)
    if col.element_type is not None:
        element = ValueKind.TEXT if col.element_kind == "e" else _SCALARS.get(col.element_type)
        if element in _ARRAY_ELEMENTS:
            select = SelectAs.TEXT_ARRAY if col.element_kind == "e" else SelectAs.RAW
            return Column(col.name, prop, col.type_name, ValueKind.ARRAY, select, element, col.comparable)
    # No Neo4j equivalent (money, geometric types, ranges, network addresses, bit strings, xml, ...):
    # stored as PostgreSQL's own text form, which round-trips exactly.
    return Column(col.name, prop, col.type_name, ValueKind.TEXT, SelectAs.TEXT, comparable=col.comparable)


class _Problems:
    def __init__(self, index: LineIndex) -> None:
        self.index = index
        self.items: list[str] = []

    def add(self, at: tuple[str | int, ...], message: str) -> None:
        self.items.append(f"{self.index.where(at)}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            raise MappingError("the mapping does not match the database:\n  " + "\n  ".join(self.items))


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    if close:
        return f"; did you mean `{close[0]}`?"
    return f"; known: {', '.join(choices[:12])}" if choices else ""


def _check_identifier(problems: _Problems, at: tuple[str | int, ...], what: str, name: str) -> None:
    if not IDENTIFIER.match(name):
        fixed = re.sub(r"[^A-Za-z0-9_]", "_", name)
        if not fixed or fixed[0].isdigit():
            fixed = "_" + fixed
        problems.add(at, f"invalid {what} `{name}`: use letters, digits and _ only, e.g. `{fixed}`")
    elif name.lower().startswith(RESERVED_PREFIX):
        problems.add(at, f"{what} `{name}` uses the prefix `{RESERVED_PREFIX}`, which pg2neo reserves; rename it")


def _labels_of(table: CatalogTable, node: NodeSpec) -> tuple[str, ...]:
    if node.labels:
        return tuple(node.labels)
    if node.label:
        return (node.label,)
    return ("".join(part.capitalize() for part in table.name.split("_")),)


# Key types whose Neo4j value is not an exact image of the PostgreSQL key: two rows with different keys could
# become one node (numeric -> Float), or a delete would not find the node its insert created.
_EXACT_AS_FLOAT = {"float4", "float8", "int2", "int4"}


def key_problem(col: CatalogColumn, override: str) -> str | None:
    """Why `col` cannot be a node key mapped with `override`, and what to write instead; None when it is exact."""
    as_text = f"`types: {{{col.name}: string}}`"
    if col.base_type == "money":
        return (
            f"key column `{col.name}` is `money`, whose text and scale depend on the session's lc_monetary, so the "
            f"key would not stay exact; use another unique NOT NULL column as `key:`"
        )
    if override == "float" and col.base_type not in _EXACT_AS_FLOAT:
        return (
            f"key column `{col.name}` ({col.type_name}) mapped as `float` is lossy: different keys can round to one "
            f"Float and merge into one node; keep keys exact: map it as its exact text with {as_text}"
        )
    if override == "json":
        return (
            f"key column `{col.name}` mapped as `json` would be stored as JSON text but found by its plain text on "
            f"deletes; map it with {as_text} (exact) or leave it native"
        )
    if override == "string" and col.base_type == "bpchar":
        return (
            f"key column `{col.name}` ({col.type_name}) is exact natively and its padding is part of the key; "
            f"remove `{col.name}` from `types:`"
        )
    if override == "native" and col.base_type == "numeric":
        return (
            f"key column `{col.name}` ({col.type_name}) would become a Float, which keeps only 15-17 digits: "
            f"different keys (12345678901234567890 and 12345678901234567891, 0.1 and 0.10000000000000001) would "
            f"merge into one node; keep keys exact: add {as_text} under `properties:` (the key is then the exact "
            f'decimal text, e.g. "0.10")'
        )
    if override == "native" and col.element_type is not None:
        return (
            f"key column `{col.name}` ({col.type_name}) is an array: a Neo4j list loses its lower bound and "
            f"numeric precision, and deletes could not find it; map it as its exact text with {as_text}"
        )
    return None


def _split(schema: str, table: str) -> tuple[str, str]:
    if "." in table:
        first, second = table.split(".", 1)
        return first, second
    return schema, table


def load_mapping(path: Path, conn: psycopg.Connection[Any]) -> Mapping:
    """Load the file, read the catalog of the tables it names from `conn`, and resolve it."""
    spec, index = load_file(path)
    return resolve(spec, index, read_catalog(conn, named_tables(spec)))


def named_tables(spec: MappingFile) -> list[tuple[str, str]]:
    """The (schema, table) pairs the file names, in the order `resolve` looks them up: what its snapshot holds."""
    names = [t for node in spec.nodes for t in (node.table, *(rel.to for rel in node.relationships))]
    names += [rel.table for rel in spec.relationships]
    return list(dict.fromkeys(_split(spec.schema_, t) for t in names))


def resolve(spec: MappingFile, index: LineIndex, catalog: Catalog) -> Mapping:
    """The plan of `spec` (read from `index.path`) over `catalog`; raises `MappingError` listing every problem."""
    problems = _Problems(index)

    def lookup(at: tuple[str | int, ...], table: str) -> CatalogTable | None:
        schema, name = _split(spec.schema_, table)
        qualified = f"{schema}.{name}"
        found = catalog.tables.get(qualified)
        if found is None:
            names = list(catalog.table_names.get(schema, ()))
            problems.add(at, f"unknown table `{qualified}`{_suggest(name, names)}")
        return found

    tables_seen: dict[str, tuple[str | int, ...]] = {}
    node_tables: dict[str, tuple[CatalogTable, NodeSpec, int]] = {}
    for i, node in enumerate(spec.nodes):
        at: tuple[str | int, ...] = ("nodes", i, "table")
        found = lookup(at, node.table)
        if found is None:
            continue
        if found.qualified in tables_seen:
            problems.add(at, f"table `{found.qualified}` is mapped twice; merge the two entries")
            continue
        tables_seen[found.qualified] = at
        node_tables[found.qualified] = (found, node, i)

    nodes = [_resolve_node(problems, table, node, i, node_tables, lookup) for table, node, i in node_tables.values()]
    joins: list[JoinTable] = []
    joins_at: dict[int, JoinTable] = {}
    for i, rel in enumerate(spec.relationships):
        at = ("relationships", i, "table")
        found = lookup(at, rel.table)
        if found is None:
            continue
        if found.qualified in tables_seen:
            problems.add(
                at, f"table `{found.qualified}` is already mapped; a table is a node or a join table, not both"
            )
            continue
        tables_seen[found.qualified] = at
        join = _resolve_join(problems, found, rel, i, node_tables)
        if join is not None:
            joins.append(join)
            joins_at[i] = join

    _check_shared_labels(problems, node_tables)
    _check_shared_types(problems, spec, node_tables, joins_at)
    if not spec.nodes and not spec.relationships:
        problems.add((), "the mapping maps nothing: add `nodes:` entries (see docs/mapping.md)")
    problems.raise_if_any()
    return Mapping(
        nodes=tuple(n for n in nodes if n is not None),
        joins=tuple(joins),
        source=str(index.path),
    )


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _check_shared_labels(problems: _Problems, node_tables: dict[str, tuple[CatalogTable, NodeSpec, int]]) -> None:
    """Nodes are MERGEd on their first label and key: a label that is the first one of one table and any label of
    another makes rows of both tables with equal keys one node (authors 2 and publishers 2 become one `Person`).
    pg2neo cannot prove two tables' keys disjoint, so it refuses; labels that are second on every table are safe."""
    seen: list[tuple[CatalogTable, int, tuple[str, ...]]] = []
    for table, node, i in node_tables.values():
        labels = _labels_of(table, node)
        at: tuple[str | int, ...] = ("nodes", i, "labels" if node.labels else "label" if node.label else "table")
        for other, other_i, other_labels in seen:
            shared = labels[0] if labels[0] in other_labels else other_labels[0] if other_labels[0] in labels else None
            if shared is None:
                continue
            problems.add(
                at,
                f"label `{shared}` is also a label of `{other.qualified}` "
                f"({problems.index.where(('nodes', other_i))}): nodes are merged on their first label and key, so "
                f"rows of the two tables with equal keys would become one node; give each table its own first "
                f"label and keep a shared one second on both, e.g. `labels: [{_camel(table.name)}, {shared}]` here "
                f"and `labels: [{_camel(other.name)}, {shared}]` on `{other.qualified}`",
            )
            break
        seen.append((table, i, labels))


@dataclass(frozen=True)
class _Writer:
    """One mapping entry that writes relationships of `type`, from nodes of `start` to nodes of `end` (tables)."""

    type: str
    start: str
    end: str
    owner: str  # the table whose rows draw the relationships
    join: bool
    direction: str
    at: tuple[str | int, ...]
    what: str

    def clears(self, other: _Writer) -> bool:
        """Whether this writer's removals can reach relationships `other` draws (both of one type).

        A join table clears its type by row key and TRUNCATE clears the whole type, whatever the labels; a foreign
        key clears the relationships of that type on its own table's side (outgoing for `out`, incoming for `in`).
        """
        if self.join:
            return True
        side = other.start if self.direction == "out" else other.end
        return side == self.owner


def _check_shared_types(
    problems: _Problems,
    spec: MappingFile,
    node_tables: dict[str, tuple[CatalogTable, NodeSpec, int]],
    joins: dict[int, JoinTable],
) -> None:
    """Refuse two entries that draw one relationship type where one's removals reach the other's relationships."""
    writers: list[_Writer] = []
    for table, node, i in node_tables.values():
        for j, rel in enumerate(node.relationships):
            schema, name = _split(spec.schema_, rel.to)
            target = f"{schema}.{name}"
            if target not in node_tables:
                continue
            start, end = (table.qualified, target) if rel.direction == "out" else (target, table.qualified)
            at: tuple[str | int, ...] = ("nodes", i, "relationships", j)
            what = f"the foreign key ({', '.join(rel.columns)}) of `{table.qualified}`"
            writers.append(_Writer(rel.type, start, end, table.qualified, False, rel.direction, at, what))
    for i, join in joins.items():
        what = f"the join table `{join.table}`"
        start, end = join.start.table, join.end.table
        writers.append(_Writer(join.type, start, end, join.table, True, "out", ("relationships", i), what))
    for n, writer in enumerate(writers):
        for other in writers[:n]:
            if other.type != writer.type or not (writer.clears(other) or other.clears(writer)):
                continue
            why = (
                "join-table relationships are cleared by type and row key, whatever their nodes"
                if writer.join or other.join
                else "both draw it on the same nodes"
            )
            problems.add(
                (*writer.at, "type"),
                f"relationship type `{writer.type}` is also drawn by {other.what} ({problems.index.where(other.at)}); "
                f"{why}, so each would delete the other's relationships; give this one its own type, e.g. "
                f"`type: {writer.type}_{writer.owner.split('.', 1)[1].upper()}`",
            )
            break


def _unique_key(table: CatalogTable, columns: tuple[str, ...]) -> bool:
    return any(set(key) == set(columns) for key in table.unique_keys) and all(
        table.columns[c].not_null for c in columns
    )


def _resolve_columns(
    problems: _Problems,
    at: tuple[str | int, ...],
    table: CatalogTable,
    props: PropertiesSpec,
    skip: set[str],
    taken: dict[str, str],
    key_role: bool = False,
) -> tuple[Column, ...]:
    """The property columns; `skip` are the key columns of a node (`key_role`) or the endpoint columns of a join."""
    names = list(table.columns)
    for where, listed in (("exclude", props.exclude), ("rename", list(props.rename)), ("types", list(props.types))):
        for j, name in enumerate(listed):
            if name not in table.columns:
                problems.add(
                    (*at, where, j if where == "exclude" else name),
                    f"unknown column `{name}` in `{table.qualified}`{_suggest(name, names)}",
                )
    _ignored_entries(problems, at, table, props, skip, key_role)
    if props.include == "all":
        chosen = [n for n in names if n not in skip]
    else:
        chosen = []
        for j, name in enumerate(props.include):
            if name not in table.columns:
                problems.add(
                    (*at, "include", j), f"unknown column `{name}` in `{table.qualified}`{_suggest(name, names)}"
                )
            elif name not in skip:
                chosen.append(name)
    columns = []
    for name in chosen:
        if name in props.exclude:
            continue
        prop = props.rename.get(name, name)
        _check_identifier(problems, (*at, "rename", name), "property name", prop)
        if prop in taken:
            problems.add(
                (*at, "rename", name) if name in props.rename else at,
                f"column `{name}` would become property `{prop}`, which {taken[prop]} already uses; "
                f"rename it, e.g. `rename: {{{name}: pg_{name}}}`, or exclude it",
            )
            continue
        taken[prop] = f"column `{name}`"
        columns.append(column_plan(table.columns[name], prop, props.types.get(name, "native")))
    return tuple(columns)


def _ignored_entries(
    problems: _Problems,
    at: tuple[str | int, ...],
    table: CatalogTable,
    props: PropertiesSpec,
    skip: set[str],
    key_role: bool,
) -> None:
    """Entries of `properties:` that would have no effect: refused, since the writer meant something by them."""
    included = set(table.columns) if props.include == "all" else set(props.include)
    for j, name in enumerate(props.exclude):
        if name in skip and key_role:
            problems.add(
                (*at, "exclude", j),
                f"`{name}` is a key column, and key columns are always properties; remove it from `exclude`",
            )
        elif props.include != "all" and name in included:
            problems.add(
                (*at, "exclude", j),
                f"column `{name}` is both in `include` and in `exclude`; keep it in only one of them",
            )
    copied = {n for n in included if n in table.columns and n not in skip and n not in props.exclude}
    for where, listed in (("rename", list(props.rename)), ("types", list(props.types))):
        for name in listed:
            if name not in table.columns or name in copied:
                continue
            if name in skip and key_role:
                if where == "rename":
                    problems.add(
                        (*at, where, name),
                        f"`{name}` is a key column: its property name is set by `key_property`, not `rename`; "
                        f"write `key_property: {props.rename[name]}` on the node instead",
                    )
                continue  # `types` of a key column applies to the key
            why = (
                "an endpoint column of the join table, never a property"
                if name in skip
                else "not copied (it is excluded, or not in `include`)"
            )
            problems.add(
                (*at, where, name),
                f"`{where}` names column `{name}`, which is {why}, so it would be ignored; remove it",
            )


def _resolve_node(
    problems: _Problems,
    table: CatalogTable,
    node: NodeSpec,
    i: int,
    node_tables: dict[str, tuple[CatalogTable, NodeSpec, int]],
    lookup: Any,
) -> NodeTable | None:
    base: tuple[str | int, ...] = ("nodes", i)
    labels = _labels_of(table, node)
    for j, label in enumerate(labels):
        _check_identifier(problems, (*base, "labels", j) if node.labels else (*base, "label"), "label", label)

    key = tuple(node.key) if node.key else table.primary_key
    if not key:
        problems.add(
            (*base, "table"), f"`{table.qualified}` has no primary key; name a unique NOT NULL column: `key: <col>`"
        )
        return None
    missing = [c for c in key if c not in table.columns]
    if missing:
        problems.add((*base, "key"), f"unknown key column `{missing[0]}`{_suggest(missing[0], list(table.columns))}")
        return None
    if not _unique_key(table, key):
        problems.add(
            (*base, "key"),
            f"key ({', '.join(key)}) of `{table.qualified}` is not unique and NOT NULL in PostgreSQL; use the primary "
            f"key ({', '.join(table.primary_key) or 'none'}) or add a unique constraint on it",
        )
        return None
    key_props = tuple(node.key_property) if node.key_property else key
    if len(key_props) != len(key):
        problems.add((*base, "key_property"), f"key has {len(key)} column(s) but key_property names {len(key_props)}")
        return None
    for prop in key_props:
        _check_identifier(problems, (*base, "key_property"), "property name", prop)
    if len(set(key_props)) != len(key_props):
        problems.add((*base, "key_property"), f"key_property names a property twice: {', '.join(key_props)}")
        return None
    overrides = node.properties.types
    lossy = False
    for c in key:
        problem = key_problem(table.columns[c], overrides.get(c, "native"))
        if problem is not None:
            problems.add((*base, "properties", "types", c) if c in overrides else (*base, "key"), problem)
            lossy = True
    if lossy:
        return None
    taken = {prop: f"the node key `{col}`" for prop, col in zip(key_props, key, strict=True)}
    key_columns = tuple(
        column_plan(table.columns[c], p, overrides.get(c, "native")) for c, p in zip(key, key_props, strict=True)
    )
    other = _resolve_columns(problems, (*base, "properties"), table, node.properties, set(key), taken, key_role=True)

    for attr in ("version_column", "updated_at_column"):
        value = getattr(node, attr)
        if value is not None and value not in table.columns:
            problems.add((*base, attr), f"unknown column `{value}`{_suggest(value, list(table.columns))}")

    rels = []
    for j, rel in enumerate(node.relationships):
        at: tuple[str | int, ...] = (*base, "relationships", j)
        _check_identifier(problems, (*at, "type"), "relationship type", rel.type)
        target = lookup((*at, "to"), rel.to)
        if target is None:
            continue
        if target.qualified not in node_tables:
            problems.add((*at, "to"), f"`{target.qualified}` is not mapped as a node; add it under `nodes:`")
            continue
        bad = [c for c in rel.columns if c not in table.columns]
        if bad:
            problems.add((*at, "columns"), f"unknown column `{bad[0]}`{_suggest(bad[0], list(table.columns))}")
            continue
        fk = next(
            (f for f in table.foreign_keys if f.columns == tuple(rel.columns) and f.ref_table == target.qualified), None
        )
        if fk is None:
            candidates = [f"{', '.join(f.columns)} -> {f.ref_table}" for f in table.foreign_keys]
            problems.add(
                (*at, "columns"),
                f"no foreign key ({', '.join(rel.columns)}) -> `{target.qualified}` exists on `{table.qualified}`; "
                f"add the constraint or use one of: {'; '.join(candidates) or 'none'}",
            )
            continue
        target_table, target_spec, _ = node_tables[target.qualified]
        target_key = tuple(target_spec.key) if target_spec.key else target_table.primary_key
        target_props = tuple(target_spec.key_property) if target_spec.key_property else target_key
        target_labels = _labels_of(target_table, target_spec)
        rels.append(
            ForeignKeyRel(
                type=rel.type,
                columns=fk.columns,
                target_table=target.qualified,
                target_label=target_labels[0],
                target_key_props=target_props,
                ref_columns=fk.ref_columns,
                target_key_columns=target_key,
                direction=rel.direction,
            )
        )
    return NodeTable(
        table=table.qualified,
        schema=table.schema,
        name=table.name,
        labels=labels,
        key_columns=key,
        key_props=key_props,
        key_types=tuple(table.columns[c].type_name for c in key),
        columns=key_columns + other,
        fk_rels=tuple(rels),
        version_column=node.version_column,
        updated_at_column=node.updated_at_column,
        line=problems.index.line(base),
    )


def _resolve_join(
    problems: _Problems,
    table: CatalogTable,
    rel: JoinRelSpec,
    i: int,
    node_tables: dict[str, tuple[CatalogTable, NodeSpec, int]],
) -> JoinTable | None:
    base: tuple[str | int, ...] = ("relationships", i)
    _check_identifier(problems, (*base, "type"), "relationship type", rel.type)
    ends = []
    for side, spec in (("from", rel.from_), ("to", rel.to)):
        at: tuple[str | int, ...] = (*base, side)
        schema, name = _split(table.schema, spec.table)
        qualified = f"{schema}.{name}"
        if qualified not in node_tables:
            problems.add((*at, "table"), f"`{qualified}` is not mapped as a node; add it under `nodes:`")
            continue
        bad = [c for c in spec.columns if c not in table.columns]
        if bad:
            problems.add((*at, "columns"), f"unknown column `{bad[0]}`{_suggest(bad[0], list(table.columns))}")
            continue
        fk = next(
            (f for f in table.foreign_keys if f.columns == tuple(spec.columns) and f.ref_table == qualified), None
        )
        if fk is None:
            problems.add(
                (*at, "columns"),
                f"no foreign key ({', '.join(spec.columns)}) -> `{qualified}` exists on `{table.qualified}`; add it",
            )
            continue
        target_table, target_spec, _ = node_tables[qualified]
        target_key = tuple(target_spec.key) if target_spec.key else target_table.primary_key
        labels = _labels_of(target_table, target_spec)
        ends.append(
            Endpoint(
                table=qualified,
                label=labels[0],
                key_props=tuple(target_spec.key_property) if target_spec.key_property else target_key,
                columns=fk.columns,
                ref_columns=fk.ref_columns,
                target_key_columns=target_key,
            )
        )
    key = tuple(rel.key) if rel.key else table.primary_key
    if not key:
        problems.add(
            (*base, "table"), f"`{table.qualified}` has no primary key; name a unique NOT NULL key: `key: [..]`"
        )
        return None
    if any(c not in table.columns for c in key) or not _unique_key(table, key):
        problems.add((*base, "key"), f"key ({', '.join(key)}) of `{table.qualified}` is not unique and NOT NULL")
        return None
    if len(ends) != 2:
        return None
    endpoint_columns = set(ends[0].columns) | set(ends[1].columns)
    taken: dict[str, str] = {}
    props = _resolve_columns(problems, (*base, "properties"), table, rel.properties, endpoint_columns, taken)
    prop_names = tuple(c.prop for c in props)
    key_plans = tuple(column_plan(table.columns[c], c) for c in key if c not in {p.name for p in props})
    return JoinTable(
        table=table.qualified,
        schema=table.schema,
        name=table.name,
        type=rel.type,
        key_columns=key,
        key_types=tuple(table.columns[c].type_name for c in key),
        start=ends[0],
        end=ends[1],
        columns=props + key_plans,
        props=prop_names,
        line=problems.index.line(base),
    )
