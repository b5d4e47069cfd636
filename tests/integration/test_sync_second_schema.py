"""A second schema, unlike the reference one, synced by configuration alone and checked against the oracle.

Place in the data flow: end to end (schemas/second.sql + schemas/second.yaml -> init -> snapshot -> live changes
-> Neo4j). Exercises text and composite keys, self-referencing and composite foreign keys, bytea, json/jsonb,
int[]/text[], numeric, timestamptz, interval, an enum, a join table with properties, types Neo4j has no
equivalent for (point, money: stored as PostgreSQL's text), NaN/Infinity, and rows Neo4j cannot hold (dead
letters, while the rest of their batch lands). Also the catalog validation errors: file:line and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from neo4j import Driver
from neo4j.time import Duration

from oracle import NodeSpec, SchemaSpec, assert_graph_matches
from pg2neo.apply.engine import Engine
from pg2neo.errors import MappingError
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_snapshot
from pg2neo.settings import ApplySettings
from second_schema import SECOND, SECOND_SQL, SECOND_YAML, SEED

pytestmark = pytest.mark.integration


@dataclass
class Second:
    dsn: str
    conn: psycopg.Connection[Any]
    driver: Driver
    mapping: Mapping
    engine: Engine

    def queued(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM pg2neo.changes").fetchone()
        assert row is not None
        return int(row[0])

    def check(self) -> None:
        while self.engine.apply_next() is not None:
            pass
        assert self.queued() == 0
        assert_graph_matches(self.conn, self.driver, SECOND)

    def cypher(self, query: str, **params: Any) -> list[dict[str, Any]]:
        with self.driver.session() as session:
            return [record.data() for record in session.run(query, params)]  # type: ignore[arg-type]

    def dead_letters(self) -> dict[tuple[str, ...], str]:
        rows = self.conn.execute("SELECT key, message FROM pg2neo.dead_letters WHERE tbl = 'public.warehouses'")
        return {tuple(r[0]): str(r[1]) for r in rows.fetchall()}


@pytest.fixture
def second(pg_dsn: str, graph: Connections) -> Iterator[Second]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(SECOND_SQL.read_text(encoding="utf-8"))  # type: ignore[call-overload]
        conn.execute(SEED)  # type: ignore[call-overload]
        mapping = load_mapping(SECOND_YAML, conn)
        install.init(conn, driver, mapping)
        engine = Engine(pg_dsn, driver, mapping, ApplySettings(batch_rows=50))
        try:
            run_snapshot(engine, Stopper(), lambda table, result: None)
            yield Second(pg_dsn, conn, driver, mapping, engine)
        finally:
            engine.close()


def test_snapshot_maps_every_type(second: Second) -> None:
    s = second
    s.check()
    [dock] = s.cypher("MATCH (w:Warehouse:Site {region: 'eu-west', number: 1}) RETURN w")
    w = dock["w"]
    assert w["display_label"] == "Dock" and "label" not in w and "secret" not in w
    assert w["capacity"] == 1500.25 and isinstance(w["capacity"], float)
    assert w["photo"] == b"\x00\xff\x10"
    assert w["shelf_ids"] == [1, 2, 3] and w["tags"] == ["a", "b c"]
    assert isinstance(w["open_for"], Duration)
    assert (w["open_for"].months, w["open_for"].days, w["open_for"].seconds, w["open_for"].nanoseconds) == (
        14,
        3,
        4 * 3600 + 5 * 60 + 6,
        500_000_000,
    )
    assert w["opened_at"].to_native().isoformat() == "2020-02-29T10:00:00.123456+00:00"
    assert w["mood"] == "busy"
    [nan] = s.cypher("MATCH (w:Warehouse {region: 'eu-west', number: 2}) RETURN w.ratio AS r, w.capacity AS c")
    assert math.isnan(nan["r"]) and math.isnan(nan["c"])  # NaN is a float in Neo4j too
    prices = {r["sku"]: r["p"] for r in s.cypher("MATCH (i:Item) RETURN i.sku AS sku, i.price AS p")}
    assert prices["A-2"] == math.inf and prices["B-1"] == -math.inf and prices["C-1"] is None
    [eu] = s.cypher("MATCH (r:Region {code: 'eu'}) RETURN r.location AS loc, r.fee AS fee, r.title AS title")
    assert eu == {"loc": "(10.5,-3)", "fee": "$12.34", "title": "Europe"}  # no Neo4j equivalent: PostgreSQL's text
    [item] = s.cypher("MATCH (i:Item {sku: 'A-1'}) RETURN i.weight AS w, i.spec AS spec, i.internal AS internal")
    assert item == {"w": "1.500", "spec": '{"w": 1, "w": 2}', "internal": None}  # `types: string`; json text as is
    stocks = s.cypher("MATCH (:Warehouse)-[r:STOCKS]->(i:Item {sku: 'A-1'}) RETURN r.comment AS c, r.qty AS q")
    assert stocks == [{"c": "top shelf", "q": 5}]
    # The array holding NULL: a dead letter with a clear reason, and no node
    letters = s.dead_letters()
    assert list(letters) == [("eu", "7")]
    assert "column `shelf_ids`: the array contains NULL" in letters[("eu", "7")]
    assert "types: {shelf_ids: json}" in letters[("eu", "7")]
    assert s.cypher("MATCH (w:Warehouse {region: 'eu', number: 7}) RETURN w") == []


def test_live_changes_on_every_table(second: Second) -> None:
    s = second
    c = s.conn
    s.check()
    # inserts
    c.execute("INSERT INTO regions (code, name, parent_code, location) VALUES ('eu-north', 'North', 'eu', '(0,0)')")
    c.execute(
        "INSERT INTO warehouses (region_code, num, open_for, attrs, shelf_ids) "
        "VALUES ('eu-north', 1, 'P1Y', '{\"k\": 1}', '{9}')"
    )
    c.execute("INSERT INTO items (sku, title, wh_region, wh_num) VALUES ('D-1', 'Drill', 'eu-north', 1)")
    c.execute("INSERT INTO stock (wh_region, wh_num, sku, qty) VALUES ('eu-north', 1, 'D-1', 3)")
    s.check()
    # updates: properties, self-referencing FK re-point and NULL, composite FK re-point, join-table properties
    c.execute("UPDATE regions SET parent_code = 'eu-west', fee = 99.5 WHERE code = 'eu-north'")
    c.execute("UPDATE regions SET parent_code = NULL WHERE code = 'eu-east'")
    c.execute("UPDATE warehouses SET capacity = 7, open_for = NULL, tags = '{z}', photo = NULL WHERE num = 1")
    c.execute("UPDATE items SET wh_region = 'eu-east', wh_num = 1, replaced_by = 'C-1' WHERE sku = 'A-1'")
    c.execute("UPDATE items SET wh_num = NULL WHERE sku = 'A-2'")
    c.execute("UPDATE stock SET qty = qty + 1, note = 'recounted' WHERE sku = 'A-1'")
    s.check()
    moved = s.cypher("MATCH (:Item {sku: 'A-1'})-[:STORED_AT]->(w) RETURN w.region AS r, w.number AS n")
    assert moved == [{"r": "eu-east", "n": 1}]
    assert s.cypher("MATCH (:Item {sku: 'A-2'})-[r:STORED_AT]->() RETURN r") == []
    assert s.cypher("MATCH (:Region {code: 'eu-north'})-[:PART_OF]->(p) RETURN p.code AS p") == [{"p": "eu-west"}]
    # a text key changes: the old node goes, the new one comes
    c.execute("UPDATE regions SET code = 'void' WHERE code = 'x'")
    # a join row's key changes: the relationship moves
    c.execute("UPDATE stock SET sku = 'C-1' WHERE sku = 'A-2'")
    s.check()
    assert s.cypher("MATCH (r:Region {code: 'x'}) RETURN r") == []
    # deletes, with cascades and SET NULLs
    c.execute("DELETE FROM stock WHERE sku = 'D-1'")
    c.execute("DELETE FROM items WHERE sku = 'B-1'")  # A-1.replaced_by was B-1 before; SET NULL elsewhere
    c.execute("DELETE FROM warehouses WHERE region_code = 'eu-east'")  # cascades stock, SET NULL items
    c.execute("DELETE FROM regions WHERE code = 'eu-north'")  # cascades its warehouse, whose items lose the link
    s.check()


def test_update_of_unmapped_columns_queues_nothing(second: Second) -> None:
    s = second
    s.check()
    s.conn.execute("UPDATE warehouses SET secret = 'changed' WHERE num = 1")  # excluded
    s.conn.execute("UPDATE items SET internal = 'changed'")  # not included
    s.conn.execute("UPDATE items SET title = title")  # no value changes
    assert s.queued() == 0
    s.conn.execute("UPDATE items SET title = 'Anvil!' WHERE sku = 'A-1'")
    assert s.queued() == 1
    # columns without a btree equality (json, point) are compared through their text: a change still queues
    s.conn.execute("UPDATE items SET spec = '{\"v\": 3}' WHERE sku = 'C-1'")
    s.conn.execute("UPDATE regions SET location = '(9,9)' WHERE code = 'eu'")
    assert s.queued() == 3
    s.conn.execute("UPDATE regions SET location = location")
    assert s.queued() == 3
    s.check()
    [region] = s.cypher("MATCH (r:Region {code: 'eu'}) RETURN r.location AS loc")
    assert region == {"loc": "(9,9)"}


def test_unstorable_rows_become_dead_letters_and_the_rest_lands(second: Second) -> None:
    s = second
    s.check()
    with s.conn.transaction():
        s.conn.execute("INSERT INTO regions (code, name) VALUES ('batch', 'Batch')")
        s.conn.execute(
            "INSERT INTO warehouses (region_code, num, tags, opened_at, shelf_ids) VALUES "
            "('batch', 1, '{ok}', now(), '{1}'), "
            "('batch', 2, '{a,NULL}', NULL, NULL), "
            "('batch', 3, NULL, 'infinity', NULL), "
            "('batch', 4, NULL, '-infinity', '{5}')"
        )
    s.check()  # everything storable landed; the oracle leaves the others out
    letters = s.dead_letters()
    assert set(letters) == {("eu", "7"), ("batch", "2"), ("batch", "3"), ("batch", "4")}
    assert "column `tags`: the array contains NULL" in letters[("batch", "2")]
    assert "column `opened_at`: the value 'infinity' has no Neo4j temporal equivalent" in letters[("batch", "3")]
    assert "types: {opened_at: string}" in letters[("batch", "3")]
    assert "'-infinity'" in letters[("batch", "4")]
    assert s.cypher("MATCH (w:Warehouse {region: 'batch'}) RETURN w.number AS n") == [{"n": 1}]

    # An UPDATE that makes a synced row unstorable: a dead letter; the node keeps its last stored state
    # (it is not silently altered), the rest of the batch lands, and fixing the row syncs it again.
    node = "MATCH (w:Warehouse {region: 'eu-west', number: 2}) RETURN w.shelf_ids AS s, w.display_label AS l"
    assert s.cypher(node) == [{"s": [], "l": None}]
    s.conn.execute("UPDATE warehouses SET shelf_ids = '{NULL}', label = 'x' WHERE region_code = 'eu-west' AND num = 2")
    s.conn.execute("UPDATE items SET title = 'Cog 2' WHERE sku = 'C-1'")
    while s.engine.apply_next() is not None:
        pass
    assert s.queued() == 0
    assert "column `shelf_ids`: the array contains NULL" in s.dead_letters()[("eu-west", "2")]
    assert s.cypher(node) == [{"s": [], "l": None}]
    assert s.cypher("MATCH (i:Item {sku: 'C-1'}) RETURN i.title AS t") == [{"t": "Cog 2"}]
    s.conn.execute("UPDATE warehouses SET shelf_ids = '{4}' WHERE region_code = 'eu-west' AND num = 2")
    s.check()
    assert s.cypher(node) == [{"s": [4], "l": "x"}]


# -- catalog validation: file:line and the fix ----------------------------------------------------------------


@pytest.fixture
def second_db(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(SECOND_SQL.read_text(encoding="utf-8"))  # type: ignore[call-overload]
        yield conn


def _error(tmp_path: Path, conn: psycopg.Connection[Any], text: str) -> tuple[Path, str]:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError) as exc:
        load_mapping(path, conn)
    return path, str(exc.value)


def test_second_mapping_is_valid(second_db: psycopg.Connection[Any]) -> None:
    mapping = load_mapping(SECOND_YAML, second_db)
    assert [n.labels for n in mapping.nodes] == [("Region",), ("Warehouse", "Site"), ("Item",)]
    assert [j.type for j in mapping.joins] == ["STOCKS"]


def test_unknown_table_and_column(tmp_path: Path, second_db: psycopg.Connection[Any]) -> None:
    path, message = _error(
        tmp_path,
        second_db,
        "nodes:\n  - table: regoins\n  - table: warehouses\n    properties:\n      exclude: [secrte]\n",
    )
    assert message.startswith("the mapping does not match the database:")
    assert f"{path}:2: unknown table `public.regoins`; did you mean `regions`?" in message
    assert f"{path}:5: unknown column `secrte` in `public.warehouses`; did you mean `secret`?" in message


def test_key_that_is_not_unique(tmp_path: Path, second_db: psycopg.Connection[Any]) -> None:
    path, message = _error(tmp_path, second_db, "nodes:\n  - table: notes\n    key: tag\n")
    assert f"{path}:3: key (tag) of `public.notes` is not unique and NOT NULL in PostgreSQL" in message
    assert "use the primary key (id) or add a unique constraint on it" in message


def test_relationship_without_foreign_key(tmp_path: Path, second_db: psycopg.Connection[Any]) -> None:
    path, message = _error(
        tmp_path,
        second_db,
        "nodes:\n"
        "  - table: regions\n"
        "  - table: items\n"
        "    relationships:\n"
        "      - type: NAMED_AFTER\n"
        "        columns: title\n"
        "        to: regions\n",
    )
    assert f"{path}:6: no foreign key (title) -> `public.regions` exists on `public.items`" in message
    assert "add the constraint or use one of: replaced_by -> public.items" in message


def test_invalid_label_and_type(tmp_path: Path, second_db: psycopg.Connection[Any]) -> None:
    path, message = _error(
        tmp_path,
        second_db,
        "nodes:\n"
        "  - table: regions\n"
        "    label: Bad`Label\n"
        "    relationships:\n"
        "      - {type: part-of, columns: parent_code, to: regions}\n"
        "  - table: items\n"
        "    label: _pg2neo_item\n",
    )
    assert f"{path}:3: invalid label `Bad`Label`: use letters, digits and _ only, e.g. `Bad_Label`" in message
    assert f"{path}:5: invalid relationship type `part-of`" in message and "e.g. `part_of`" in message
    assert f"{path}:7: label `_pg2neo_item` uses the prefix `_pg2neo`, which pg2neo reserves; rename it" in message


def test_property_name_collision(tmp_path: Path, second_db: psycopg.Connection[Any]) -> None:
    path, message = _error(
        tmp_path,
        second_db,
        "nodes:\n  - table: regions\n    properties:\n      rename: {name: code}\n",
    )
    assert f"{path}:4: column `name` would become property `code`, which the node key `code` already uses" in message
    assert "rename it, e.g. `rename: {name: pg_name}`, or exclude it" in message


def test_join_endpoint_not_mapped(tmp_path: Path, second_db: psycopg.Connection[Any]) -> None:
    path, message = _error(
        tmp_path,
        second_db,
        "nodes:\n"
        "  - table: items\n"
        "relationships:\n"
        "  - table: stock\n"
        "    type: STOCKS\n"
        "    from: {table: warehouses, columns: [wh_region, wh_num]}\n"
        "    to: {table: items, columns: sku}\n",
    )
    assert f"{path}:6: `public.warehouses` is not mapped as a node; add it under `nodes:`" in message


def test_money_as_float_override(tmp_path: Path, pg_dsn: str, graph: Connections) -> None:
    path = tmp_path / "fee.yaml"
    path.write_text("nodes:\n  - table: regions\n    label: Region\n    properties:\n      types: {fee: float}\n")
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(SECOND_SQL.read_text(encoding="utf-8"))  # type: ignore[call-overload]
        conn.execute("INSERT INTO regions (code, name, fee) VALUES ('eu', 'Europe', 12.34), ('x', 'X', NULL)")
        try:
            mapping = load_mapping(path, conn)
        except MappingError as exc:  # acceptable too: refused up front, with the line and the fix
            assert f"{path}:5:" in str(exc) and "string" in str(exc)
            return
        install.init(conn, driver, mapping)
        engine = Engine(pg_dsn, driver, mapping, ApplySettings())
        try:
            run_snapshot(engine, Stopper(), lambda table, result: None)
        finally:
            engine.close()
        with driver.session() as session:
            fees = {r["c"]: r["f"] for r in session.run("MATCH (r:Region) RETURN r.code AS c, r.fee AS f")}
    assert fees == {"eu": 12.34, "x": None}


def test_temporal_and_bytea_keys_from_a_session_in_another_time_zone(
    tmp_path: Path, pg_dsn: str, graph: Connections
) -> None:
    """Keys are queued as text in the WRITER's session settings; a delete must still find the node."""
    path = tmp_path / "keys.yaml"
    path.write_text(
        "nodes:\n  - table: readings\n    label: Reading\n    key: [at, sensor]\n  - table: blobs\n    label: Blob\n"
    )
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(
            "CREATE TABLE readings (at timestamptz, sensor bytea, value double precision, PRIMARY KEY (at, sensor));"
            "CREATE TABLE blobs (id bytea PRIMARY KEY, note text)"  # type: ignore[call-overload]
        )
        mapping = load_mapping(path, conn)
        install.init(conn, driver, mapping)
        engine = Engine(pg_dsn, driver, mapping, ApplySettings())
        spec = SchemaSpec(
            nodes=(
                NodeSpec("Reading", ("at", "sensor"), "SELECT at, sensor, value FROM readings"),
                NodeSpec("Blob", ("id",), "SELECT id, note FROM blobs"),
            ),
            rels=(),
        )
        try:
            conn.execute("SET TIME ZONE 'Asia/Kathmandu'")  # +05:45: the queued key text carries this offset
            conn.execute(
                "INSERT INTO readings VALUES ('2024-03-01 10:00:00.25+00', '\\x01', 1.5), "
                "('2024-03-01 11:00:00+00', '\\x02', 2.5)"
            )
            conn.execute("INSERT INTO blobs VALUES ('\\x00ff', 'a'), ('\\x', 'empty')")
            while engine.apply_next() is not None:
                pass
            assert_graph_matches(conn, driver, spec)
            conn.execute("DELETE FROM readings WHERE sensor = '\\x01'")
            conn.execute("UPDATE blobs SET id = '\\x0102' WHERE id = '\\x00ff'")
            conn.execute("DELETE FROM blobs WHERE id = '\\x'")
            while engine.apply_next() is not None:
                pass
            assert_graph_matches(conn, driver, spec)
        finally:
            engine.close()


def test_date_key_written_under_another_datestyle(tmp_path: Path, pg_dsn: str, graph: Connections) -> None:
    path = tmp_path / "days.yaml"
    path.write_text("nodes:\n  - table: days\n    label: Day\n")
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute("CREATE TABLE days (day date PRIMARY KEY, note text)")
        conn.execute("INSERT INTO days VALUES ('2024-03-01', 'a'), ('2024-01-03', 'b')")
        mapping = load_mapping(path, conn)
        install.init(conn, driver, mapping)
        engine = Engine(pg_dsn, driver, mapping, ApplySettings())
        spec = SchemaSpec(nodes=(NodeSpec("Day", ("day",), "SELECT day, note FROM days"),), rels=())
        try:
            run_snapshot(engine, Stopper(), lambda table, result: None)
            conn.execute("SET datestyle = 'SQL, DMY'")
            conn.execute("UPDATE days SET note = 'changed' WHERE day = '2024-03-01'::date")
            conn.execute("DELETE FROM days WHERE day = '2024-01-03'::date")
            while engine.apply_next() is not None:
                pass
            conn.execute("SET datestyle = 'ISO, MDY'")
            assert_graph_matches(conn, driver, spec)
        finally:
            engine.close()
