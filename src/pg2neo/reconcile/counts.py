"""Counts per label and relationship type on both sides: what the mapping expects from PostgreSQL, what Neo4j has."""

from __future__ import annotations

from typing import Any

import psycopg
from neo4j import Driver
from psycopg import sql

from pg2neo.apply.cypher import count_label_query, count_type_query
from pg2neo.mapping.plan import Mapping


def expected_counts(conn: psycopg.Connection[Any], mapping: Mapping) -> dict[str, int]:
    """Nodes per label and relationships per type that the mapping of the current rows gives."""
    counts: dict[str, int] = {}

    def count(table: str, not_null: tuple[str, ...] = ()) -> int:
        schema, name = table.split(".", 1)
        where: sql.Composable = sql.SQL("")
        if not_null:
            where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(
                sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in not_null
            )
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name)) + where).fetchone()
        return int(row[0]) if row else 0

    for node in mapping.nodes:
        counts[f":{node.label}"] = counts.get(f":{node.label}", 0) + count(node.table)
        for rel in node.fk_rels:
            key = f"[:{rel.type}]"
            counts[key] = counts.get(key, 0) + count(node.table, rel.columns)
    for join in mapping.joins:
        key = f"[:{join.type}]"
        counts[key] = counts.get(key, 0) + count(join.table, (*join.start.columns, *join.end.columns))
    return counts


def graph_counts(driver: Driver, mapping: Mapping, database: str = "neo4j") -> dict[str, int]:
    counts: dict[str, int] = {}
    with driver.session(database=database) as session:
        for label in dict.fromkeys(n.label for n in mapping.nodes):
            record = session.run(count_label_query(label)).single()
            counts[f":{label}"] = int(record["c"]) if record else 0
        types = [r.type for n in mapping.nodes for r in n.fk_rels] + [j.type for j in mapping.joins]
        for rtype in dict.fromkeys(types):
            record = session.run(count_type_query(rtype)).single()
            counts[f"[:{rtype}]"] = int(record["c"]) if record else 0
    return counts
