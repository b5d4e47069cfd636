"""Checks the mapping file against the live catalog and turns it into the resolved `Mapping`.

Every problem is collected (not just the first) and reported with the file, the line and what to write instead.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import psycopg

from pg2neo.errors import MappingError
from pg2neo.mapping.catalog import CatalogColumn, CatalogTable, read_table, table_names
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


def column_plan(col: CatalogColumn, prop: str, override: str = "native") -> Column:
    """How one PostgreSQL column is read and stored in Neo4j (the rules of docs/mapping.md)."""
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


def _split(schema: str, table: str) -> tuple[str, str]:
    if "." in table:
        first, second = table.split(".", 1)
        return first, second
    return schema, table


def load_mapping(path: Path, conn: psycopg.Connection[Any]) -> Mapping:
    """Load the file, check it against the catalog of `conn`, and resolve it."""
    spec, index = load_file(path)
    return resolve(spec, index, conn)


def resolve(spec: MappingFile, index: LineIndex, conn: psycopg.Connection[Any]) -> Mapping:
    problems = _Problems(index)
    catalog: dict[str, CatalogTable] = {}
    known_tables: dict[str, list[str]] = {}

    def lookup(at: tuple[str | int, ...], table: str) -> CatalogTable | None:
        schema, name = _split(spec.schema_, table)
        qualified = f"{schema}.{name}"
        if qualified in catalog:
            return catalog[qualified]
        found = read_table(conn, schema, name)
        if found is None:
            names = known_tables.setdefault(schema, table_names(conn, schema))
            problems.add(at, f"unknown table `{qualified}`{_suggest(name, names)}")
            return None
        catalog[qualified] = found
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

    if not spec.nodes and not spec.relationships:
        problems.add((), "the mapping maps nothing: add `nodes:` entries (see docs/mapping.md)")
    problems.raise_if_any()
    return Mapping(
        nodes=tuple(n for n in nodes if n is not None),
        joins=tuple(joins),
        source=str(index.path),
    )


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
) -> tuple[Column, ...]:
    names = list(table.columns)
    for where, listed in (("exclude", props.exclude), ("rename", list(props.rename)), ("types", list(props.types))):
        for j, name in enumerate(listed):
            if name not in table.columns:
                problems.add(
                    (*at, where, j if where == "exclude" else name),
                    f"unknown column `{name}` in `{table.qualified}`{_suggest(name, names)}",
                )
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


def _resolve_node(
    problems: _Problems,
    table: CatalogTable,
    node: NodeSpec,
    i: int,
    node_tables: dict[str, tuple[CatalogTable, NodeSpec, int]],
    lookup: Any,
) -> NodeTable | None:
    base: tuple[str | int, ...] = ("nodes", i)
    labels = tuple(node.labels) if node.labels else ((node.label,) if node.label else ())
    if not labels:
        labels = ("".join(part.capitalize() for part in table.name.split("_")),)
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
    taken = {prop: f"the node key `{col}`" for prop, col in zip(key_props, key, strict=True)}
    key_columns = tuple(column_plan(table.columns[c], p) for c, p in zip(key, key_props, strict=True))
    other = _resolve_columns(problems, (*base, "properties"), table, node.properties, set(key), taken)

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
        target_labels = (
            tuple(target_spec.labels)
            if target_spec.labels
            else (
                (target_spec.label,)
                if target_spec.label
                else ("".join(p.capitalize() for p in target_table.name.split("_")),)
            )
        )
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
        labels = (
            tuple(target_spec.labels)
            if target_spec.labels
            else (
                (target_spec.label,)
                if target_spec.label
                else ("".join(p.capitalize() for p in target_table.name.split("_")),)
            )
        )
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
