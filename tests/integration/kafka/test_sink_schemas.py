"""The reference schema and the second schema through the Kafka path, and the same graph as trigger mode.

Place in the data flow: PostgreSQL -> Debezium -> Kafka -> pg2neo sink -> Neo4j, then, on the same rows, trigger
mode's snapshot into the emptied graph. After the Debezium snapshot and after live writes (inserts, updates,
deletes, foreign-key moves, key changes, join rows with properties) the graph must equal the oracle's; then the
graph trigger mode writes from the same rows must be the same graph, down to each node's content hash.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka_support import KafkaSource
from neo4j import Driver
from sink_support import SinkThread, mapping_of, pending_relationships, prepare_graph, sink_config

from oracle import REFERENCE, SchemaSpec, actual_graph, diff, expected_graph
from pg2neo.apply.cypher import HASH_PROP
from pg2neo.apply.engine import Engine
from pg2neo.demo.flow import mapping_path
from pg2neo.demo.generate import generate, load_schema
from pg2neo.demo.workload import live_burst
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_snapshot
from pg2neo.settings import ApplySettings
from pg2neo.transport.sink import Sink
from second_schema import SECOND, SECOND_SQL, SECOND_YAML, SEED

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _reference_setup(conn: psycopg.Connection[Any]) -> None:
    load_schema(conn)
    generate(conn, 2)


def _reference_live(conn: psycopg.Connection[Any]) -> None:
    done = live_burst(conn, 200, seed=3)
    assert sum(v for k, v in done.items() if k not in ("skipped", "conflicts")) > 100, done


def _second_setup(conn: psycopg.Connection[Any]) -> None:
    conn.execute(SECOND_SQL.read_text(encoding="utf-8"))
    conn.execute(SEED)


def _second_live(conn: psycopg.Connection[Any]) -> None:
    for statement in (
        "INSERT INTO regions (code, name, parent_code, location) VALUES ('eu-north', 'North', 'eu', '(0,0)')",
        "INSERT INTO warehouses (region_code, num, open_for, attrs, shelf_ids) "
        "VALUES ('eu-north', 1, 'P1Y', '{\"k\": 1}', '{9}')",
        "INSERT INTO items (sku, title, wh_region, wh_num) VALUES ('D-1', 'Drill', 'eu-north', 1)",
        "INSERT INTO stock (wh_region, wh_num, sku, qty) VALUES ('eu-north', 1, 'D-1', 3)",
        "UPDATE regions SET parent_code = 'eu-west', fee = 99.5 WHERE code = 'eu-north'",
        "UPDATE regions SET parent_code = NULL WHERE code = 'eu-east'",
        "UPDATE warehouses SET capacity = 7, open_for = NULL, tags = '{z}', photo = NULL WHERE num = 1",
        "UPDATE items SET wh_region = 'eu-east', wh_num = 1, replaced_by = 'C-1' WHERE sku = 'A-1'",
        "UPDATE items SET wh_num = NULL WHERE sku = 'A-2'",
        "UPDATE stock SET qty = qty + 1, note = 'recounted' WHERE sku = 'A-1'",
        "UPDATE regions SET code = 'void' WHERE code = 'x'",  # a text key changes
        "UPDATE stock SET sku = 'C-1' WHERE sku = 'A-2'",  # a join row's key changes
        "DELETE FROM stock WHERE sku = 'D-1'",
        "DELETE FROM items WHERE sku = 'B-1'",
        "DELETE FROM warehouses WHERE region_code = 'eu-east'",  # cascades stock, SET NULL items
        "DELETE FROM regions WHERE code = 'eu-north'",  # cascades its warehouse, whose items lose the link
    ):
        conn.execute(statement)


@dataclass(frozen=True)
class Case:
    setup: Callable[[psycopg.Connection[Any]], None]
    mapping: Path
    spec: SchemaSpec
    live: Callable[[psycopg.Connection[Any]], None]


CASES = {
    "reference": Case(_reference_setup, mapping_path(), REFERENCE, _reference_live),
    "second": Case(_second_setup, SECOND_YAML, SECOND, _second_live),
}


def apply_check_fixes(source: KafkaSource) -> None:
    """Do what `pg2neo kafka check` asks (the first fix it gives for each problem), as a user would; then it must
    find nothing blocking."""
    checked = source.pg2neo("kafka", "check")
    if checked.returncode != 0:
        output = checked.stdout + checked.stderr
        # each blocking problem of a table comes with `fix: ALTER TABLE ...; or ...` (the first alternative is taken)
        fixes = re.findall(r"fix: (ALTER TABLE [^;]+);", output)
        assert fixes, output
        for fix in fixes:
            source.execute(fix)
    checked = source.pg2neo("kafka", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def wait_for_oracle(conn: psycopg.Connection[Any], driver: Driver, spec: SchemaSpec, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    problems = ""
    while time.monotonic() < deadline:
        problems = diff(expected_graph(conn, spec), actual_graph(driver, spec))
        if not problems:
            return
        time.sleep(1.0)
    pytest.fail("the graph did not reach the oracle's:\n" + problems[:3000])


def node_hashes(driver: Driver) -> list[tuple[str, str]]:
    records = driver.execute_query(
        f"MATCH (n) WHERE n.{HASH_PROP} IS NOT NULL RETURN labels(n)[0] AS l, n.{HASH_PROP} AS h"
    ).records
    return sorted((str(r["l"]), str(r["h"])) for r in records)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_schema_through_kafka_gives_the_graph_trigger_mode_gives(
    name: str, graph: Connections, kafka_source_factory: Callable[[str, str], KafkaSource]
) -> None:
    case = CASES[name]
    source = kafka_source_factory("SELECT 1", case.mapping.read_text(encoding="utf-8"))
    with psycopg.connect(source.dsn, autocommit=True) as conn, graph.driver() as driver:
        case.setup(conn)
        mapping = mapping_of(source)
        prepare_graph(driver, mapping)
        apply_check_fixes(source)
        source.register()
        worker = SinkThread(Sink(sink_config(source), driver, mapping))
        try:
            wait_for_oracle(conn, driver, case.spec)
            case.live(conn)
            wait_for_oracle(conn, driver, case.spec)
        finally:
            worker.close()
        assert pending_relationships(graph) == 0
        through_kafka = actual_graph(driver, case.spec)
        kafka_hashes = node_hashes(driver)

        # Trigger mode, from the same rows, into the emptied graph.
        driver.execute_query("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS")
        install.init(conn, driver, mapping)
        engine = Engine(source.dsn, driver, mapping, ApplySettings())
        try:
            run_snapshot(engine, Stopper(), lambda table, result: None)
        finally:
            engine.close()
        assert diff(through_kafka, actual_graph(driver, case.spec)) == ""
        assert kafka_hashes == node_hashes(driver)
        assert len(kafka_hashes) > 20
