"""`pg2neo mapping suggest` against real PostgreSQL and Neo4j: the suggestion passes `init` unchanged, syncs, and
`verify` finds no drift.

Place in the data flow: before `mapping` (the suggestion), then end to end: suggest -> file -> `load_mapping` ->
`install.init` -> snapshot -> `verify`; on some schemas also live changes drained by the service. Schemas: the
reference one, the second one, and the shapes of tests/integration/schemas/suggest_*.sql (composite keys, several
foreign keys to one table, self references, join tables with and without a surrogate key, tables without a key,
several schemas).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from neo4j import Driver
from typer.testing import CliRunner

from pg2neo.apply.engine import Engine
from pg2neo.cli.mapping_cmd import mapping_app
from pg2neo.demo.generate import generate, load_schema
from pg2neo.errors import MappingError
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.reconcile.verify import verify
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_service, run_snapshot
from pg2neo.settings import ApplySettings

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).parent / "schemas"


@pytest.fixture
def db(pg_dsn: str, graph: Connections) -> Iterator[tuple[str, psycopg.Connection[Any], Driver]]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        yield pg_dsn, conn, driver


def run_suggest(pg_dsn: str, out: Path, *args: str) -> str:
    """`pg2neo mapping suggest --out FILE ...` as the CLI runs it; returns the file's text."""
    result = CliRunner().invoke(mapping_app, ["suggest", "--out", str(out), *args], env={"PG2NEO_PG_DSN": pg_dsn})
    assert result.exit_code == 0, (result.output, result.exception)
    return out.read_text()


def drain(pg_dsn: str, driver: Driver, mapping: Mapping) -> None:
    engine = Engine(pg_dsn, driver, mapping, ApplySettings())
    try:
        run_service(engine, Stopper(), 0.05, until_empty=True)
    finally:
        engine.close()


def suggest_and_sync(
    pg_dsn: str, conn: psycopg.Connection[Any], driver: Driver, tmp_path: Path, *args: str
) -> tuple[str, Mapping]:
    """Suggest, then init + snapshot with the file as written; verify must find the graph equal to PostgreSQL."""
    path = tmp_path / "suggested.yaml"
    text = run_suggest(pg_dsn, path, *args)
    mapping = load_mapping(path, conn)
    install.init(conn, driver, mapping)
    engine = Engine(pg_dsn, driver, mapping, ApplySettings())
    try:
        run_snapshot(engine, Stopper(), lambda *_: None)
    finally:
        engine.close()
    assert_no_drift(pg_dsn, driver, mapping)
    return text, mapping


def assert_no_drift(pg_dsn: str, driver: Driver, mapping: Mapping) -> None:
    report = verify(pg_dsn, driver, mapping)
    assert report.drift_total == 0, report.as_dict()
    assert all(s.pg_items == s.neo4j_items for s in report.scopes), report.as_dict()


def count(driver: Driver, pattern: str) -> int:
    with driver.session() as session:
        record = session.run(f"MATCH {pattern} RETURN count(*) AS n").single()  # type: ignore[arg-type]
        assert record is not None
        return int(record["n"])


def scalar(conn: psycopg.Connection[Any], query: str) -> int:
    row = conn.execute(query).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])


def entries(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The suggested node and join entries, by table."""
    data = yaml.safe_load(text)
    return {n["table"]: n for n in data["nodes"]}, {r["table"]: r for r in data.get("relationships") or []}


def test_reference_schema(db: tuple[str, psycopg.Connection[Any], Driver], tmp_path: Path) -> None:
    pg_dsn, conn, driver = db
    load_schema(conn)
    generate(conn, 2)
    text, mapping = suggest_and_sync(pg_dsn, conn, driver, tmp_path)
    nodes, joins = entries(text)
    assert set(nodes) == {
        "tenants", "users", "programs", "projects", "content_items", "content_chunks", "threads", "messages",
    }  # fmt: skip
    assert nodes["content_items"]["label"] == "ContentItem"
    assert nodes["messages"]["key"] == "neo4j_node_id" and nodes["messages"]["key_property"] == "id"
    assert nodes["messages"]["properties"] == {"rename": {"id": "pg_id"}}
    assert nodes["tenants"]["version_column"] == "version"
    assert nodes["tenants"]["updated_at_column"] == "updated_at"
    assert set(joins) == {"thread_content", "message_context"}
    assert count(driver, "(:Message)-[:IN_THREAD]->(:Thread)") == scalar(conn, "SELECT count(*) FROM messages")
    assert count(driver, "(:Thread)-[:PARENT_THREAD]->(:Thread)") == scalar(
        conn, "SELECT count(parent_thread_id) FROM threads"
    )
    assert count(driver, "(:ContentItem)-[:AUTHOR]->(:User)") == scalar(
        conn, "SELECT count(author_id) FROM content_items"
    )
    assert count(driver, "(:Thread)-[:HAS_CONTENT]->(:ContentItem)") == scalar(
        conn, "SELECT count(*) FROM thread_content"
    )
    assert count(driver, "(:Thread)-[:HAS_CONTENT]->(:ContentItem)") > 0

    # The suggestion keeps syncing: live changes drained by the service leave no drift either.
    conn.execute("UPDATE thread_content SET relevance_score = relevance_score + 1")
    conn.execute("UPDATE messages SET thread_id = (SELECT min(id) FROM threads)")
    conn.execute("DELETE FROM content_chunks WHERE id IN (SELECT id FROM content_chunks LIMIT 3)")
    drain(pg_dsn, driver, mapping)
    assert_no_drift(pg_dsn, driver, mapping)
    assert count(driver, "(:Message)-[:IN_THREAD]->(t:Thread)") == scalar(conn, "SELECT count(*) FROM messages")


SECOND_ROWS = """
INSERT INTO regions (code, name, parent_code, location, fee, founded, mood) VALUES
    ('eu', 'Europe', NULL, '(10.5,-3)', 12.34, '1993-11-01', 'calm'), ('eu-west', 'West', 'eu', NULL, 0, NULL, 'busy');
INSERT INTO warehouses (region_code, num, label, capacity, opened_at, open_for, photo, attrs, shelf_ids, tags, ratio)
VALUES ('eu', 1, 'Main', 1200.50, '2020-01-01T10:00:00Z', '1 day 2 hours', '\\x0102', '{"a": 1}', '{1,2}', '{x}',
        0.5),
       ('eu-west', 7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO items (sku, title, price, weight, wh_region, wh_num, replaced_by, spec, sizes) VALUES
    ('a', 'Anvil', 10.5, 3.25, 'eu', 1, NULL, '{"x": [1]}', '{1,2}'),
    ('b', 'Bolt', NULL, NULL, NULL, NULL, 'a', NULL, NULL);
INSERT INTO stock VALUES
    ('eu', 1, 'a', 5, now(), 'top shelf'), ('eu-west', 7, 'a', 0, NULL, NULL), ('eu', 1, 'b', 2, NULL, NULL);
INSERT INTO notes VALUES (1, 'x', 'body');
"""


def test_second_schema(db: tuple[str, psycopg.Connection[Any], Driver], tmp_path: Path) -> None:
    pg_dsn, conn, driver = db
    conn.execute((SCHEMAS / "second.sql").read_text())
    conn.execute(SECOND_ROWS)
    text, mapping = suggest_and_sync(pg_dsn, conn, driver, tmp_path)
    nodes, joins = entries(text)
    assert {n: e["label"] for n, e in nodes.items()} == {
        "regions": "Region", "warehouses": "Warehouse", "items": "Item", "notes": "Note",
    }  # fmt: skip
    assert joins["stock"]["from"] == {"table": "warehouses", "columns": ["wh_region", "wh_num"]}
    assert joins["stock"]["to"] == {"table": "items", "columns": "sku"}
    assert count(driver, "(:Region)-[:PARENT]->(:Region)") == 1
    assert count(driver, "(:Item)-[:IN_WAREHOUSE]->(:Warehouse)") == 1
    assert count(driver, "(:Item)-[:REPLACED_BY]->(:Item)") == 1
    assert count(driver, "(:Warehouse)-[:STOCK {qty: 5, note: 'top shelf'}]->(:Item)") == 1
    conn.execute("UPDATE stock SET qty = qty + 1")
    conn.execute("UPDATE items SET replaced_by = NULL")
    drain(pg_dsn, driver, mapping)
    assert_no_drift(pg_dsn, driver, mapping)


def test_composite_keys_and_unmappable_tables(db: tuple[str, psycopg.Connection[Any], Driver], tmp_path: Path) -> None:
    pg_dsn, conn, driver = db
    conn.execute((SCHEMAS / "suggest_composite.sql").read_text())
    text, mapping = suggest_and_sync(pg_dsn, conn, driver, tmp_path)
    nodes, joins = entries(text)
    assert set(nodes) == {"countries", "cities", "addresses", "tariffs", "shipments", "devices", "readings"}
    assert not joins
    assert nodes["tariffs"]["properties"] == {"types": {"rate": "string"}}
    assert nodes["devices"]["key"] == "serial"
    assert nodes["devices"]["properties"]["rename"] == {"Display Name": "Display_Name", "_pg2neo_flag": "pg2neo_flag"}
    for left_out in ("public.audit_log: no primary key", "public.labels: no key can be a node key: column label",
                     "public.fees: no key can be a node key: key column `amount` is `money`"):  # fmt: skip
        assert left_out in text
    assert count(driver, "(:Address)-[:IN_CITY]->(:City {country_code: 'fr'})") == 2
    assert count(driver, "(:City)-[:IN_COUNTRY]->(:Country)") == 4
    assert count(driver, "(:Shipment)-[:IN_TARIFF]->(:Tariff {rate: '12.345'})") == 1
    assert count(driver, "(:Device {serial: 'A-1', Display_Name: 'Front door', pg2neo_flag: true})") == 1
    assert "#   public.readings_2024, public.readings_2025: a partition of public.readings" in text
    assert count(driver, "(:Reading)-[:IN_DEVICE]->(:Device)") == 2
    conn.execute("INSERT INTO readings VALUES ('B-2', '2024-12-31', 3)")
    conn.execute("UPDATE cities SET population = 1 WHERE name = 'Kyoto'")
    conn.execute("UPDATE shipments SET tariff_rate = 0.5 WHERE id = 2")
    drain(pg_dsn, driver, mapping)
    assert_no_drift(pg_dsn, driver, mapping)
    assert count(driver, "(:Reading)-[:IN_DEVICE]->(:Device {serial: 'B-2'})") == 2


def test_several_foreign_keys_and_self_references(
    db: tuple[str, psycopg.Connection[Any], Driver], tmp_path: Path
) -> None:
    pg_dsn, conn, driver = db
    conn.execute((SCHEMAS / "suggest_multi_fk.sql").read_text())
    text, mapping = suggest_and_sync(pg_dsn, conn, driver, tmp_path)
    nodes, joins = entries(text)
    assert {n: e["label"] for n, e in nodes.items()} == {
        "people": "Person", "statuses": "Status", "categories": "Category", "reviews": "Review",
    }  # fmt: skip
    assert [r["type"] for r in nodes["reviews"]["relationships"]] == [
        "AUTHOR", "REVIEWER", "CREATED_BY", "IN_STATUS", "IN_CATEGORY",
    ]  # fmt: skip
    assert [r["type"] for r in nodes["people"]["relationships"]] == ["MANAGER", "MENTOR"]
    assert joins["friendships"]["type"] == "FRIENDSHIP"
    assert count(driver, "(:Review)-[:AUTHOR]->(:Person)") == 3
    assert count(driver, "(:Review {id: 3})-[:REVIEWER]->(:Person {id: 4})") == 1
    assert count(driver, "(:Person {id: 4})-[:MANAGER]->(:Person {id: 3})") == 1
    assert count(driver, "(:Person {id: 4})-[:MENTOR]->(:Person {id: 3})") == 1
    assert count(driver, "(p:Person {id: 4})-[:FRIENDSHIP]->(p)") == 1
    assert count(driver, "(:Category)-[:PARENT]->(:Category)") == 2
    conn.execute("UPDATE reviews SET reviewer_id = author_id, status_code = 'done'")
    conn.execute("UPDATE people SET mentor_id = 1 WHERE id = 2")
    conn.execute("DELETE FROM friendships WHERE person_id = 1")
    drain(pg_dsn, driver, mapping)
    assert_no_drift(pg_dsn, driver, mapping)
    assert count(driver, "(:Person {id: 2})-[:MENTOR]->(:Person {id: 1})") == 1


def test_join_tables(db: tuple[str, psycopg.Connection[Any], Driver], tmp_path: Path) -> None:
    pg_dsn, conn, driver = db
    conn.execute((SCHEMAS / "suggest_joins.sql").read_text())
    text, mapping = suggest_and_sync(pg_dsn, conn, driver, tmp_path)
    nodes, joins = entries(text)
    assert set(joins) == {"memberships", "assignments"}
    assert set(nodes) == {"users", "groups", "products", "orders", "projects", "roles", "enrollments",
                          "enrollment_notes"}  # fmt: skip
    assert joins["memberships"]["from"] == {"table": "users", "columns": "user_id"}
    assert "public.audit_log: no primary key" in text
    assert "shaped like a join table, but referenced by public.enrollment_notes, so it is a node" in text
    assert "are not unique together: kept as a node" in text
    assert count(driver, "(:User)-[:MEMBERSHIP]->(:Group)") == 3
    assert count(driver, "(:User)-[:MEMBERSHIP {role: 'owner'}]->(:Group {name: 'admins'})") == 1
    assert count(driver, "(:User)-[:ASSIGNMENT {role_id: 1}]->(:Project {name: 'alpha'})") == 1
    assert count(driver, "(:Order)-[:IN_USER]->(:User)") == 3
    assert count(driver, "(:EnrollmentNote)-[:IN_ENROLLMENT]->(:Enrollment)-[:IN_GROUP]->(:Group)") == 1
    conn.execute("UPDATE memberships SET role = 'admin' WHERE role IS NULL")
    conn.execute("DELETE FROM assignments WHERE project_id = 2")
    conn.execute("INSERT INTO memberships (user_id, group_id) VALUES ('00000000-0000-0000-0000-000000000003', 1)")
    drain(pg_dsn, driver, mapping)
    assert_no_drift(pg_dsn, driver, mapping)
    assert count(driver, "(:User)-[:MEMBERSHIP]->(:Group)") == 4


def test_tables_and_exclude_choose(db: tuple[str, psycopg.Connection[Any], Driver], tmp_path: Path) -> None:
    pg_dsn, conn, driver = db
    conn.execute((SCHEMAS / "suggest_joins.sql").read_text())
    text, _ = suggest_and_sync(
        pg_dsn, conn, driver, tmp_path, "--tables", "[a-p]*", "--tables", "users", "--exclude", "*_log", "-x", "orders"
    )
    nodes, joins = entries(text)
    assert set(nodes) == {"users", "groups", "products", "projects", "enrollments", "enrollment_notes"}
    assert set(joins) == {"memberships", "assignments"}
    assert "public.roles: not chosen by --tables" in text
    assert "public.audit_log, public.orders: left out by --exclude" in text
    assert "not drawn: (role_id) -> public.roles" not in text  # assignments is a join: role_id stays a property
    assert count(driver, "(:Role)") == 0


def test_several_schemas(db: tuple[str, psycopg.Connection[Any], Driver], tmp_path: Path) -> None:
    pg_dsn, conn, driver = db
    conn.execute((SCHEMAS / "suggest_schemas.sql").read_text())
    text, _ = suggest_and_sync(pg_dsn, conn, driver, tmp_path, "--schema", "public", "--schema", "crm")
    nodes, joins = entries(text)
    assert {n: e["label"] for n, e in nodes.items()} == {
        "contacts": "Contact", "notes": "Note", "crm.accounts": "Account", "crm.notes": "Notes",
    }  # fmt: skip
    assert joins["crm.account_contacts"]["from"] == {"table": "crm.accounts", "columns": "account_id"}
    assert joins["crm.account_contacts"]["to"] == {"table": "public.contacts", "columns": "contact_id"}
    assert count(driver, "(:Contact)-[:IN_ACCOUNT]->(:Account)") == 1
    assert count(driver, "(:Account)-[:HAS_CONTACT]->(:Contact)") == 3
    # Without the second schema, the foreign key to it is left out with a comment, and the rest still syncs.
    path = tmp_path / "public_only.yaml"
    only_public = run_suggest(pg_dsn, path)
    assert "not drawn: (account_id) -> crm.accounts, which is not a node: it is not in the chosen schemas" in (
        only_public
    )
    load_mapping(path, conn)


def test_errors_are_clear(db: tuple[str, psycopg.Connection[Any], Driver], tmp_path: Path) -> None:
    pg_dsn, conn, _ = db
    conn.execute("CREATE TABLE only_logs (at timestamptz, message text)")
    runner = CliRunner()
    env = {"PG2NEO_PG_DSN": pg_dsn}
    missing = runner.invoke(mapping_app, ["suggest", "--schema", "nope"], env=env)
    assert isinstance(missing.exception, MappingError)
    assert "schema `nope` does not exist" in str(missing.exception)
    nothing = runner.invoke(mapping_app, ["suggest"], env=env)
    assert isinstance(nothing.exception, MappingError)
    assert "public.only_logs: no primary key" in str(nothing.exception)
    conn.execute("CREATE TABLE things (id integer PRIMARY KEY)")
    printed = runner.invoke(mapping_app, ["suggest"], env=env)
    assert printed.exit_code == 0
    assert "  - table: things\n    label: Thing\n" in printed.stdout
