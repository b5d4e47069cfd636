"""Reads mapped rows from PostgreSQL, by key (for queued changes) or by key range (for the snapshot).

Every read selects the row's key as text (`_k`, the same text the triggers queue), the mapped columns in the form
`convert` expects, and the node keys of the rows its foreign keys point at (joined when the foreign key does not
reference the target's node key directly).
"""

from __future__ import annotations

from psycopg import sql

from pg2neo.mapping.plan import Column, Endpoint, ForeignKeyRel, JoinTable, Mapping, NodeTable, SelectAs


def _select(alias: str, column: Column, name: str | None = None) -> sql.Composable:
    ref = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(name or column.name))
    match column.select_as:
        case SelectAs.RAW:
            return ref
        case SelectAs.TEXT:
            return sql.SQL("{}::text").format(ref)
        case SelectAs.TEXT_ARRAY:
            return sql.SQL("{}::text[]").format(ref)
        case SelectAs.FLOAT:
            if column.type_name == "money":  # money has no cast to float8, only to numeric
                return sql.SQL("{}::numeric::float8").format(ref)
            return sql.SQL("{}::float8").format(ref)
        case SelectAs.JSONB_TEXT:
            return sql.SQL("to_jsonb({})::text").format(ref)


def _key_text(alias: str, columns: tuple[str, ...]) -> sql.Composable:
    parts = [sql.SQL("{}.{}::text").format(sql.Identifier(alias), sql.Identifier(c)) for c in columns]
    return sql.SQL("ARRAY[{}]").format(sql.SQL(", ").join(parts))


class _Joins:
    def __init__(self) -> None:
        self.clauses: list[sql.Composable] = []

    def target_key(
        self,
        mapping: Mapping,
        table: str,
        columns: tuple[str, ...],
        ref_columns: tuple[str, ...],
        target_key_columns: tuple[str, ...],
    ) -> list[sql.Composable]:
        """Expressions giving the target node's key values for a foreign key of `t`."""
        target = mapping.node(table)
        key_plans = target.key_column_objs
        if ref_columns == target_key_columns:
            by_ref = dict(zip(ref_columns, columns, strict=True))
            return [_select("t", plan, by_ref[plan.name]) for plan in key_plans]
        alias = f"j{len(self.clauses)}"
        on = sql.SQL(" AND ").join(
            sql.SQL("{}.{} = t.{}").format(sql.Identifier(alias), sql.Identifier(ref), sql.Identifier(col))
            for ref, col in zip(ref_columns, columns, strict=True)
        )
        self.clauses.append(
            sql.SQL("LEFT JOIN {} AS {} ON {}").format(
                sql.Identifier(*target.table.split(".", 1)), sql.Identifier(alias), on
            )
        )
        return [_select(alias, plan) for plan in key_plans]


def _base_query(mapping: Mapping, entry: NodeTable | JoinTable) -> tuple[list[sql.Composable], _Joins]:
    joins = _Joins()
    fields: list[sql.Composable] = [_key_text("t", entry.key_columns)]
    fields += [_select("t", c) for c in entry.columns]
    if isinstance(entry, NodeTable):
        rels: list[ForeignKeyRel | Endpoint] = list(entry.fk_rels)
    else:
        rels = [entry.start, entry.end]
    for rel in rels:
        table = rel.target_table if isinstance(rel, ForeignKeyRel) else rel.table
        fields += joins.target_key(mapping, table, rel.columns, rel.ref_columns, rel.target_key_columns)
    return fields, joins


def by_keys_query(mapping: Mapping, entry: NodeTable | JoinTable) -> sql.Composed:
    """Rows whose keys are given as one text array per key column (parameters, in key column order)."""
    fields, joins = _base_query(mapping, entry)
    names = [f"k{i}" for i in range(len(entry.key_columns))]
    unnest = sql.SQL("unnest({}) AS k({})").format(
        sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in names), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    on = sql.SQL(" AND ").join(
        sql.SQL("t.{} = k.{}::{}").format(sql.Identifier(col), sql.Identifier(name), sql.SQL(type_name))
        for col, name, type_name in zip(entry.key_columns, names, entry.key_types, strict=True)
    )
    return sql.SQL("SELECT {fields} FROM {table} AS t JOIN {unnest} ON {on} {joins}").format(
        fields=sql.SQL(", ").join(fields),
        table=sql.Identifier(entry.schema, entry.name),
        unnest=unnest,
        on=on,
        joins=sql.SQL(" ").join(joins.clauses),
    )


def _after(entry: NodeTable | JoinTable, after: bool) -> tuple[sql.Composable, sql.Composable]:
    """The key columns in order, and the keyset condition `(key) > (last key)` when paging `after` a key."""
    cols = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in entry.key_columns)
    if not after:
        return cols, sql.SQL("")
    values = sql.SQL(", ").join(sql.SQL("%s::{}").format(sql.SQL(t)) for t in entry.key_types)
    return cols, sql.SQL("WHERE ({}) > ({})").format(cols, values)


def page_query(mapping: Mapping, entry: NodeTable | JoinTable, after: bool) -> sql.Composed:
    """The next page of rows in key order (keyset pagination); parameters: the last key's values (if `after`), limit."""
    fields, joins = _base_query(mapping, entry)
    cols, where = _after(entry, after)
    return sql.SQL("SELECT {fields} FROM {table} AS t {joins} {where} ORDER BY {cols} LIMIT %s").format(
        fields=sql.SQL(", ").join(fields),
        table=sql.Identifier(entry.schema, entry.name),
        joins=sql.SQL(" ").join(joins.clauses),
        where=where,
        cols=cols,
    )


def page_keys_query(entry: NodeTable | JoinTable, after: bool) -> sql.Composed:
    """The keys alone of the page `page_query` reads (same parameters): used when a row of the page cannot be read,
    to read the page's rows by key and isolate the bad one."""
    cols, where = _after(entry, after)
    return sql.SQL("SELECT {key} FROM {table} AS t {where} ORDER BY {cols} LIMIT %s").format(
        key=_key_text("t", entry.key_columns),
        table=sql.Identifier(entry.schema, entry.name),
        where=where,
        cols=cols,
    )
