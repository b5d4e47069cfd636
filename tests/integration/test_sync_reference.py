"""The sync engine on the reference schema, against real servers, checked against the independent oracle.

Place in the data flow: end to end. Rows written to PostgreSQL -> capture triggers -> pg2neo.changes -> Engine ->
Neo4j; then `oracle.expected_graph(REFERENCE)` (hand-written SQL over the tables) must equal `oracle.actual_graph`.
Covers every operation on every table, the specification's own cases, the queue's edge cases (no-op updates,
rollbacks, TRUNCATE, replays), the install commands, and two appliers draining one queue at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from neo4j import Driver
from psycopg import sql
from typer.testing import CliRunner

from oracle import REFERENCE, NodeSpec, SchemaSpec, actual_graph, assert_graph_matches
from pg2neo.apply.core import READ_SLICE
from pg2neo.apply.engine import Engine
from pg2neo.cli.main import app
from pg2neo.demo.flow import mapping_path
from pg2neo.demo.generate import generate, load_schema
from pg2neo.demo.workload import live_burst
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_snapshot
from pg2neo.settings import ApplySettings

pytestmark = pytest.mark.integration

SCALE = 2  # about 25 rows in every table: enough relationships of every kind, fast to snapshot


@dataclass
class Synced:
    dsn: str
    conn: psycopg.Connection[Any]
    driver: Driver
    mapping: Mapping
    engine: Engine

    def drain(self) -> int:
        applied = 0
        while (result := self.engine.apply_next()) is not None:
            applied += result.events
        return applied

    def queued(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM pg2neo.changes").fetchone()
        assert row is not None
        return int(row[0])

    def check(self) -> None:
        """Drain the queue, then the graph must be exactly the oracle's."""
        self.drain()
        assert self.queued() == 0
        assert_graph_matches(self.conn, self.driver, REFERENCE)

    def scalar(self, query: str, params: tuple[Any, ...] = ()) -> Any:
        row = self.conn.execute(query, params).fetchone()  # type: ignore[arg-type]
        assert row is not None
        return row[0]

    def cypher(self, query: str, **params: Any) -> list[dict[str, Any]]:
        with self.driver.session() as session:
            return [record.data() for record in session.run(query, params)]  # type: ignore[arg-type]


def setup_reference(dsn: str, driver: Driver, scale: int = SCALE, batch_rows: int = 5000) -> Synced:
    conn = psycopg.connect(dsn, autocommit=True)
    load_schema(conn)
    if scale:
        generate(conn, scale)
    mapping = load_mapping(mapping_path(), conn)
    install.init(conn, driver, mapping)
    engine = Engine(dsn, driver, mapping, ApplySettings(batch_rows=batch_rows))
    run_snapshot(engine, Stopper(), lambda table, result: None)
    return Synced(dsn, conn, driver, mapping, engine)


@pytest.fixture
def synced(pg_dsn: str, graph: Connections) -> Iterator[Synced]:
    with graph.driver() as driver:
        s = setup_reference(pg_dsn, driver)
        try:
            yield s
        finally:
            s.engine.close()
            s.conn.close()


def _env(servers: Connections, dsn: str) -> dict[str, str]:
    return {
        "PG2NEO_PG_DSN": dsn,
        "PG2NEO_NEO4J__URI": servers.neo4j_uri,
        "PG2NEO_NEO4J__USER": servers.neo4j_user,
        "PG2NEO_NEO4J__PASSWORD": servers.neo4j_password,
        "PG2NEO_MAPPING": str(mapping_path()),
    }


# -- snapshot and the specification's own cases -------------------------------------------------------------


def test_snapshot_matches_oracle(synced: Synced) -> None:
    synced.check()
    expected = assert_graph_matches(synced.conn, synced.driver, REFERENCE)
    assert sum(expected.nodes.values()) >= 20 and sum(expected.rels.values()) >= 30
    assert {r[0] for r in expected.rels} >= {"INCLUDES", "USED_CONTEXT", "HAS_CHUNK", "CONTAINS_MESSAGE"}


def test_content_item_insert_update_delete(synced: Synced) -> None:
    s = synced
    tenant = s.scalar("SELECT id FROM tenants ORDER BY id LIMIT 1")
    project = s.scalar("SELECT id FROM projects WHERE tenant_id = %s LIMIT 1", (tenant,))
    author = s.scalar("SELECT id FROM users WHERE tenant_id = %s LIMIT 1", (tenant,))
    item_id, node_id = s.conn.execute(
        "INSERT INTO content_items (tenant_id, project_id, author_id, kind, title, tags, metadata) "
        "VALUES (%s, %s, %s, 'video', 'Spec item', ARRAY['a','b'], '{\"x\": [1, 2], \"y\": null}') "
        "RETURNING id, neo4j_node_id",
        (tenant, project, author),
    ).fetchone()  # type: ignore[misc]
    s.conn.execute(
        "INSERT INTO content_chunks (content_item_id, chunk_index, text, embedding) VALUES (%s, 0, 'c0', '{0.5,1.5}')",
        (item_id,),
    )
    s.check()
    [node] = s.cypher("MATCH (c:ContentItem {id: $id}) RETURN c.title AS t, c.kind AS k, c.pg_id AS p", id=str(node_id))
    assert node == {"t": "Spec item", "k": "video", "p": item_id}
    rels = s.cypher("MATCH (c:ContentItem {id: $id})-[r]-() RETURN type(r) AS t ORDER BY t", id=str(node_id))
    assert [r["t"] for r in rels] == ["AUTHORED", "HAS_CHUNK", "HAS_CONTENT", "OWNS_CONTENT"]

    s.conn.execute(
        "UPDATE content_items SET title = 'Renamed', description = NULL, metadata = '{\"z\": 1}' WHERE id = %s",
        (item_id,),
    )
    s.check()
    [node] = s.cypher("MATCH (c:ContentItem {id: $id}) RETURN c.title AS t, c.version AS v", id=str(node_id))
    assert node == {"t": "Renamed", "v": 2}

    s.conn.execute("DELETE FROM content_items WHERE id = %s", (item_id,))
    s.check()
    assert s.cypher("MATCH (c {id: $id}) RETURN c", id=str(node_id)) == []


def test_relevance_score_update_changes_includes(synced: Synced) -> None:
    s = synced
    thread, item, score = s.conn.execute(
        "SELECT thread_id, content_item_id, relevance_score FROM thread_content ORDER BY 1, 2 LIMIT 1"
    ).fetchone()  # type: ignore[misc]
    s.conn.execute(
        "UPDATE thread_content SET relevance_score = %s WHERE thread_id = %s AND content_item_id = %s",
        (score + 0.25, thread, item),
    )
    assert s.queued() == 1
    s.check()
    [rel] = s.cypher(
        "MATCH (t:Thread)-[r:INCLUDES]->(c:ContentItem) WHERE t.pg_id = $t AND c.pg_id = $c "
        "RETURN r.relevance_score AS score",
        t=thread,
        c=item,
    )
    assert rel["score"] == pytest.approx(score + 0.25)


def test_message_creates_contains_message_and_used_context(synced: Synced) -> None:
    s = synced
    thread = s.scalar("SELECT id FROM threads ORDER BY id LIMIT 1")
    chunks = [r[0] for r in s.conn.execute("SELECT id FROM content_chunks ORDER BY id LIMIT 2").fetchall()]
    with s.conn.transaction():
        message = s.scalar(
            "INSERT INTO messages (thread_id, role, body) VALUES (%s, 'assistant', 'hello') RETURNING id", (thread,)
        )
        for rank, chunk in enumerate(chunks, 1):
            s.conn.execute(
                "INSERT INTO message_context (message_id, chunk_id, rank) VALUES (%s, %s, %s)", (message, chunk, rank)
            )
    s.check()
    found = s.cypher(
        "MATCH (t:Thread {pg_id: $t})-[:CONTAINS_MESSAGE]->(m:Message {pg_id: $m})-[u:USED_CONTEXT]->(c) "
        "RETURN c.pg_id AS chunk, u.rank AS rank ORDER BY rank",
        t=thread,
        m=message,
    )
    assert found == [{"chunk": c, "rank": i} for i, c in enumerate(chunks, 1)]
    # deleting one context row removes exactly that relationship
    s.conn.execute("DELETE FROM message_context WHERE message_id = %s AND chunk_id = %s", (message, chunks[0]))
    s.check()


def test_chunks_under_has_chunk_and_fk_repoint_moves_relationship(synced: Synced) -> None:
    s = synced
    a, b = [r[0] for r in s.conn.execute("SELECT id FROM content_items ORDER BY id LIMIT 2").fetchall()]
    chunk = s.scalar(
        "INSERT INTO content_chunks (content_item_id, chunk_index, text) VALUES (%s, 900, 'moving') RETURNING id", (a,)
    )
    s.check()
    owner = "MATCH (i:ContentItem)-[:HAS_CHUNK]->(c:ContentChunk {pg_id: $c}) RETURN i.pg_id AS item"
    assert s.cypher(owner, c=chunk) == [{"item": a}]
    s.conn.execute("UPDATE content_chunks SET content_item_id = %s WHERE id = %s", (b, chunk))
    s.check()
    assert s.cypher(owner, c=chunk) == [{"item": b}]


def test_thread_parent_links(synced: Synced) -> None:
    s = synced
    tenant = s.scalar("SELECT id FROM tenants ORDER BY id LIMIT 1")
    t1, t2, t3 = [
        s.scalar("INSERT INTO threads (tenant_id, title) VALUES (%s, %s) RETURNING id", (tenant, f"t{i}"))
        for i in range(3)
    ]
    parent = "MATCH (t:Thread {pg_id: $t})-[:HAS_PARENT]->(p:Thread) RETURN p.pg_id AS p"
    s.conn.execute("UPDATE threads SET parent_thread_id = %s WHERE id = %s", (t2, t1))
    s.check()
    assert s.cypher(parent, t=t1) == [{"p": t2}]
    s.conn.execute("UPDATE threads SET parent_thread_id = %s WHERE id = %s", (t3, t1))  # re-point
    s.check()
    assert s.cypher(parent, t=t1) == [{"p": t3}]
    s.conn.execute("UPDATE threads SET parent_thread_id = NULL WHERE id = %s", (t1,))
    s.check()
    assert s.cypher(parent, t=t1) == []
    # a new child thread pointing at a parent, then the parent deleted (ON DELETE SET NULL on the child)
    child = s.scalar(
        "INSERT INTO threads (tenant_id, parent_thread_id, title) SELECT tenant_id, id, 'child' FROM threads "
        "WHERE id = %s RETURNING id",
        (t3,),
    )
    s.check()
    assert s.cypher(parent, t=child) == [{"p": t3}]
    s.conn.execute("DELETE FROM threads WHERE id = %s", (t3,))
    s.check()
    assert s.cypher(parent, t=child) == []


def test_delete_removes_all_relationships_of_its_node(synced: Synced) -> None:
    s = synced
    user = s.scalar(
        "SELECT u.id FROM users u WHERE EXISTS (SELECT 1 FROM content_items c WHERE c.author_id = u.id) LIMIT 1"
    )
    before = s.cypher("MATCH (u:User {id: $u})-[r]-() RETURN count(r) AS n", u=str(user))[0]["n"]
    assert before >= 2
    s.conn.execute("DELETE FROM users WHERE id = %s", (user,))  # SET NULL on content, threads, messages
    s.check()
    assert s.cypher("MATCH (u {id: $u}) RETURN u", u=str(user)) == []


def test_every_operation_on_every_table(synced: Synced) -> None:
    s = synced
    c = s.conn
    with c.transaction():
        tenant = s.scalar("INSERT INTO tenants (name, plan) VALUES ('T new', 'pro') RETURNING id")
        user = s.scalar(
            "INSERT INTO users (tenant_id, email, display_name) VALUES (%s, 'new@x.org', 'New') RETURNING id", (tenant,)
        )
        program = s.scalar(
            "INSERT INTO programs (tenant_id, name, starts_on) VALUES (%s, 'P', '2024-02-29') RETURNING id", (tenant,)
        )
        project = s.scalar(
            "INSERT INTO projects (tenant_id, program_id, name, budget) VALUES (%s, %s, 'Pr', 1234.56) RETURNING id",
            (tenant, program),
        )
        item = s.scalar(
            "INSERT INTO content_items (tenant_id, project_id, author_id, title) VALUES (%s, %s, %s, 'I') RETURNING id",
            (tenant, project, user),
        )
        chunk = s.scalar(
            "INSERT INTO content_chunks (content_item_id, chunk_index, text, token_count) VALUES (%s, 0, 'x', 1) "
            "RETURNING id",
            (item,),
        )
        thread = s.scalar(
            "INSERT INTO threads (tenant_id, project_id, created_by, title) VALUES (%s, %s, %s, 'Th') RETURNING id",
            (tenant, project, user),
        )
        message = s.scalar(
            "INSERT INTO messages (thread_id, author_id, body) VALUES (%s, %s, 'm') RETURNING id", (thread, user)
        )
        c.execute("INSERT INTO thread_content (thread_id, content_item_id) VALUES (%s, %s)", (thread, item))
        c.execute("INSERT INTO message_context (message_id, chunk_id) VALUES (%s, %s)", (message, chunk))
    s.check()

    updates = [
        ("UPDATE tenants SET plan = NULL WHERE id = %s", tenant),
        ("UPDATE users SET display_name = 'Renamed', is_active = false WHERE id = %s", user),
        ("UPDATE programs SET description = 'described' WHERE id = %s", program),
        ("UPDATE projects SET program_id = NULL, budget = 0.01 WHERE id = %s", project),
        ("UPDATE content_items SET kind = 'note', tags = '{x,y}' WHERE id = %s", item),
        ("UPDATE content_chunks SET embedding = '{1,2,3}' WHERE id = %s", chunk),
        ("UPDATE threads SET project_id = NULL WHERE id = %s", thread),
        ("UPDATE messages SET role = 'system', token_count = 7 WHERE id = %s", message),
        ("UPDATE thread_content SET relevance_score = 0.5 WHERE thread_id = %s", thread),
        ("UPDATE message_context SET rank = 3 WHERE message_id = %s", message),
    ]
    for statement, key in updates:
        c.execute(statement, (key,))
    assert s.queued() == len(updates)
    s.check()
    assert s.cypher("MATCH (t:Tenant {id: $t}) RETURN t.plan AS plan", t=str(tenant)) == [{"plan": None}]

    deletes = [
        ("DELETE FROM message_context WHERE message_id = %s", message),
        ("DELETE FROM thread_content WHERE thread_id = %s", thread),
        ("DELETE FROM messages WHERE id = %s", message),
        ("DELETE FROM threads WHERE id = %s", thread),
        ("DELETE FROM content_chunks WHERE id = %s", chunk),
        ("DELETE FROM content_items WHERE id = %s", item),
        ("DELETE FROM projects WHERE id = %s", project),
        ("DELETE FROM programs WHERE id = %s", program),
        ("DELETE FROM users WHERE id = %s", user),
        ("DELETE FROM tenants WHERE id = %s", tenant),
    ]
    for statement, key in deletes:
        c.execute(statement, (key,))
    s.check()
    assert s.cypher("MATCH (t:Tenant {id: $t}) RETURN t", t=str(tenant)) == []


def test_key_change_is_delete_plus_insert(synced: Synced) -> None:
    s = synced
    item = s.scalar("SELECT content_item_id FROM content_chunks ORDER BY id LIMIT 1")  # an item with chunks
    old = s.scalar("SELECT neo4j_node_id FROM content_items WHERE id = %s", (item,))
    new = s.scalar(
        "UPDATE content_items SET neo4j_node_id = gen_random_uuid() WHERE id = %s RETURNING neo4j_node_id", (item,)
    )
    # D old key, I new key, and a U for every row that draws a relationship to the item through `id` (not its key):
    # the old node goes with its relationships, so those rows are drawn again.
    referring = s.scalar(
        "SELECT (SELECT count(*) FROM content_chunks WHERE content_item_id = %s)"
        " + (SELECT count(*) FROM thread_content WHERE content_item_id = %s)",
        (item, item),
    )
    assert referring > 0
    assert s.queued() == 2 + referring
    s.check()
    assert s.cypher("MATCH (c:ContentItem {id: $id}) RETURN c", id=str(old)) == []
    assert len(s.cypher("MATCH (c:ContentItem {id: $id}) RETURN c", id=str(new))) == 1


# -- queue edge cases ------------------------------------------------------------------------------------------


def test_truncate_empties_the_label(synced: Synced) -> None:
    s = synced
    assert s.cypher("MATCH (m:Message) RETURN count(m) AS n")[0]["n"] > 0
    s.conn.execute("TRUNCATE messages CASCADE")  # message_context goes with it
    s.check()
    assert s.cypher("MATCH (m:Message) RETURN count(m) AS n")[0]["n"] == 0
    assert s.cypher("MATCH ()-[r:USED_CONTEXT]->() RETURN count(r) AS n")[0]["n"] == 0
    # rows written after the TRUNCATE land normally
    thread = s.scalar("SELECT id FROM threads ORDER BY id LIMIT 1")
    s.conn.execute("INSERT INTO messages (thread_id, body) VALUES (%s, 'after')", (thread,))
    s.check()
    assert s.cypher("MATCH (m:Message) RETURN count(m) AS n")[0]["n"] == 1


def test_update_changing_no_mapped_column_queues_nothing(synced: Synced) -> None:
    s = synced
    tenant = s.scalar("SELECT id FROM tenants ORDER BY id LIMIT 1")
    # The reference schema bumps `version` (a mapped column) on every UPDATE; without that trigger an UPDATE that
    # rewrites a row with the same values changes no mapped column.
    s.conn.execute("ALTER TABLE tenants DISABLE TRIGGER tenants_bump_version")
    s.conn.execute("UPDATE tenants SET name = name, plan = plan WHERE id = %s", (tenant,))
    assert s.queued() == 0
    s.conn.execute("UPDATE tenants SET name = name || '!' WHERE id = %s", (tenant,))
    assert s.queued() == 1
    s.check()


def test_rolled_back_transaction_leaves_no_trace(synced: Synced) -> None:
    s = synced
    before = actual_graph(s.driver, REFERENCE)
    tenant = s.scalar("SELECT id FROM tenants ORDER BY id LIMIT 1")
    with pytest.raises(RuntimeError), s.conn.transaction():
        s.conn.execute("INSERT INTO content_items (tenant_id, title) VALUES (%s, 'ghost')", (tenant,))
        s.conn.execute("DELETE FROM messages")
        s.conn.execute("UPDATE thread_content SET relevance_score = -1")
        assert s.queued() > 0  # queued inside the transaction ...
        raise RuntimeError("roll back")
    assert s.queued() == 0  # ... and gone with it
    assert s.drain() == 0
    assert actual_graph(s.driver, REFERENCE) == before
    s.check()


def test_replayed_events_leave_the_same_graph(synced: Synced) -> None:
    s = synced
    live_burst(s.conn, 60, seed=7)
    events = s.conn.execute("SELECT tbl, op, key FROM pg2neo.changes ORDER BY seq").fetchall()
    assert len(events) > 30
    s.check()
    graph_once = actual_graph(s.driver, REFERENCE)
    # A crash after Neo4j committed but before the queue was acked: the same events come back.
    with s.conn.cursor() as cur:
        cur.executemany("INSERT INTO pg2neo.changes (tbl, op, key) VALUES (%s, %s, %s)", events)
        cur.executemany("INSERT INTO pg2neo.changes (tbl, op, key) VALUES (%s, %s, %s)", events)  # and twice
    assert s.drain() == 2 * len(events)
    assert actual_graph(s.driver, REFERENCE) == graph_once
    s.check()


def test_batches_stop_at_the_byte_bound_and_keep_the_rest_queued(synced: Synced) -> None:
    s = synced
    s.conn.execute(
        "INSERT INTO messages (thread_id, role, body, token_count) "
        "SELECT (SELECT min(id) FROM threads), 'user', repeat('m', 2000) || g, 3 FROM generate_series(1, 1200) g"
    )
    s.conn.execute("UPDATE content_items SET title = 'bytes ' || id")
    queued = s.queued()
    assert queued >= 1200 + 2
    s.engine.settings = ApplySettings(batch_rows=5000, batch_bytes=64 * 1024)
    # The bound is checked between reads of READ_SLICE keys: one slice of ~2 kB messages passes it, the rest waits.
    first = s.engine.apply_next()
    assert first is not None and first.events == READ_SLICE
    assert s.queued() == queued - READ_SLICE
    batches = 1
    while s.engine.apply_next() is not None:
        batches += 1
    assert batches == 4  # 500, 500 and 200 messages (each over the bound), then the content items
    s.check()


def test_two_engines_drain_one_queue_concurrently(synced: Synced, graph: Connections) -> None:
    s = synced
    live_burst(s.conn, 80, seed=11)
    assert s.queued() > 50
    errors: list[BaseException] = []

    def drain(engine: Engine) -> None:
        try:
            while engine.apply_next() is not None:
                pass
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            engine.close()

    engines = [Engine(s.dsn, s.driver, s.mapping, ApplySettings(batch_rows=13)) for _ in range(2)]
    threads = [threading.Thread(target=drain, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    # the writers keep going while both appliers work
    live_burst(s.conn, 40, seed=12)
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    s.check()


def test_two_run_processes_drain_one_queue(synced: Synced, graph: Connections) -> None:
    s = synced
    live_burst(s.conn, 60, seed=5)
    env = {**os.environ, **_env(graph, s.dsn), "PG2NEO_APPLY__BATCH_ROWS": "9"}
    cmd = [sys.executable, "-m", "pg2neo", "run", "--until-empty"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert s.queued() == 0
    s.check()


# -- install commands ------------------------------------------------------------------------------------------


def _trigger_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
        "JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE n.nspname = 'pg2neo' AND NOT t.tgisinternal AND c.relnamespace <> n.oid"  # the application's tables
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_init_dry_run_then_init_twice_then_uninstall(pg_dsn: str, graph: Connections) -> None:
    runner = CliRunner()
    env = _env(graph, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        load_schema(conn)
        result = runner.invoke(app, ["init", "--dry-run"], env=env)
        assert result.exit_code == 0, result.output
        out = result.output
        assert "CREATE SCHEMA IF NOT EXISTS pg2neo" in out
        # row, update, truncate triggers on the 10 mapped tables, and each one's DO block that replaces the update
        # trigger by its every-column form when the table has no unmapped column
        assert out.count("CREATE TRIGGER") == 4 * 10
        assert 'ON "public"."content_items"' in out
        assert "CREATE CONSTRAINT `pg2neo_ContentItem_key` IF NOT EXISTS" in out
        assert "FOR ()-[r:`INCLUDES`]-() ON (r._pg2neo_key)" in out
        # nothing was installed
        assert conn.execute("SELECT to_regnamespace('pg2neo')").fetchone() == (None,)
        assert _trigger_count(conn) == 0
        with graph.driver() as driver, driver.session() as session:
            assert session.run("SHOW CONSTRAINTS YIELD name RETURN count(*) AS n").single()["n"] == 0  # type: ignore[index]

        for _ in range(2):  # idempotent
            result = runner.invoke(app, ["init"], env=env)
            assert result.exit_code == 0, result.output
            assert "installed" in result.output
            assert _trigger_count(conn) == 30
        with graph.driver() as driver, driver.session() as session:
            # 8 node keys and the epoch high-water node's
            assert session.run("SHOW CONSTRAINTS YIELD name RETURN count(*) AS n").single()["n"] == 9  # type: ignore[index]
        conn.execute("INSERT INTO tenants (name) VALUES ('once')")
        assert conn.execute("SELECT count(*) FROM pg2neo.changes").fetchone() == (1,)  # one trigger, not two

        with graph.driver() as driver:
            mapping = load_mapping(mapping_path(), conn)
            engine = Engine(pg_dsn, driver, mapping, ApplySettings())
            try:
                while engine.apply_next():
                    pass
            finally:
                engine.close()
            assert_graph_matches(conn, driver, REFERENCE)

        result = runner.invoke(app, ["uninstall"], env=env)
        assert result.exit_code == 0, result.output
        assert "30 triggers" in result.output
        assert _trigger_count(conn) == 0
        assert conn.execute("SELECT to_regnamespace('pg2neo')").fetchone() == (None,)
        assert conn.execute(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pg2neo'"
        ).fetchone() == (0,)
        conn.execute("INSERT INTO tenants (name) VALUES ('after uninstall')")  # writes still work


# -- node keys of other types: a delete must find the node its insert created ------------------------------------


@pytest.mark.parametrize(
    ("type_name", "value", "time_zone"),
    [
        pytest.param("char(5)", "ab", "UTC"),
        pytest.param("time", "12:30", "UTC"),
        pytest.param("timestamptz", "2024-01-01 10:00+05", "UTC"),
        pytest.param("timestamptz", "2024-01-01 10:00+05", "Asia/Tokyo"),
        pytest.param("date", "2024-02-29", "UTC"),
        pytest.param("numeric", "1.50", "UTC"),
        pytest.param("bytea", "\\x00ff", "UTC"),
        pytest.param("boolean", "true", "UTC"),
    ],
)
def test_delete_finds_the_node_whatever_the_key_type(
    pg_dsn: str, graph: Connections, tmp_path: Path, type_name: str, value: str, time_zone: str
) -> None:
    # numeric keys must stay exact: the mapping stores them as their text (a Float would merge distinct keys)
    as_text = type_name == "numeric"
    select = "SELECT k::text AS k, v FROM keyed" if as_text else "SELECT k, v FROM keyed"
    spec = SchemaSpec(nodes=(NodeSpec("Keyed", ("k",), select),), rels=())
    mapping_file = tmp_path / "keyed.yaml"
    types = ", properties: {types: {k: string}}" if as_text else ""
    mapping_file.write_text(f"nodes:\n  - {{table: keyed, label: Keyed{types}}}\n")
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(sql.SQL("CREATE TABLE keyed (k {} PRIMARY KEY, v text)").format(sql.SQL(type_name)))
        conn.execute("INSERT INTO keyed VALUES (%s, 'kept'), (%s, 'gone')", (_other(type_name), value))
        mapping = load_mapping(mapping_file, conn)
        install.init(conn, driver, mapping)
        engine = Engine(pg_dsn, driver, mapping, ApplySettings())
        try:
            run_snapshot(engine, Stopper(), lambda table, result: None)
            assert_graph_matches(conn, driver, spec)
            conn.execute(sql.SQL("SET TIME ZONE {}").format(sql.Literal(time_zone)))
            conn.execute("DELETE FROM keyed WHERE v = 'gone'")
            while engine.apply_next() is not None:
                pass
        finally:
            engine.close()
        assert_graph_matches(conn, driver, spec)


def _other(type_name: str) -> str:
    """A second key value of the same type (the row that stays)."""
    return {
        "char(5)": "zz",
        "time": "08:00",
        "timestamptz": "2023-06-01 00:00+00",
        "date": "2000-01-01",
        "numeric": "7",
        "bytea": "\\x01",
        "boolean": "false",
    }[type_name]
