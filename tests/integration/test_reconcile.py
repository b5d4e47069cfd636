"""Every reconcile policy converges to its end state on real servers (drift injected as in test_verify)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import test_verify
from test_verify import Synced, counts, inject_all

from pg2neo.apply.engine import Engine
from pg2neo.reconcile import repair
from pg2neo.reconcile.verify import verify
from pg2neo.transport import conflicts

synced = test_verify.synced


def _reconcile(s: Synced, policy: str, apply: bool = True) -> repair.RepairResult:
    report = verify(s.dsn, s.driver, s.mapping)
    assert report.drift_total > 0
    return repair.reconcile(s.dsn, s.driver, s.mapping, report.drifts, policy, apply)


def _pg(s: Synced, query: str, params: tuple[Any, ...] = ()) -> Any:
    row = s.conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def _tenant(s: Synced, offset: int = 0) -> str:
    return str(_pg(s, "SELECT id::text FROM tenants ORDER BY id OFFSET %s LIMIT 1", (offset,)))


def _item(s: Synced, offset: int) -> str:
    return str(_pg(s, "SELECT neo4j_node_id::text FROM content_items ORDER BY id OFFSET %s LIMIT 1", (offset,)))


def test_dry_run_changes_nothing_then_pg_wins_rewrites_the_graph(synced: Synced) -> None:
    expected = inject_all(synced)
    dry = _reconcile(synced, "pg-wins", apply=False)
    assert {c.decision for c in dry.planned} == {"pg"}
    assert counts(verify(synced.dsn, synced.driver, synced.mapping)) == expected  # nothing changed
    result = _reconcile(synced, "pg-wins")
    assert not result.errors
    after = verify(synced.dsn, synced.driver, synced.mapping)
    assert after.drift_total == 0, counts(after)
    assert _pg(synced, "SELECT count(*) FROM pg2neo.changes") == 0


def test_neo4j_wins_writes_postgres_without_echo(synced: Synced, monkeypatch: pytest.MonkeyPatch) -> None:
    c = synced.cypher
    tenant = _tenant(synced)
    c("MATCH (t:Tenant {id: $id}) SET t.name = 'from graph'", id=tenant)
    c("CREATE (:Tenant {id: 'dddddddd-0000-0000-0000-000000000000', name: 'graph only', version: 1})")
    item = _pg(synced, "SELECT neo4j_node_id::text FROM content_items WHERE description IS NOT NULL LIMIT 1")
    c("MATCH (n:ContentItem {id: $id}) REMOVE n.description", id=item)
    lonely = _pg(
        synced,
        "SELECT neo4j_node_id::text FROM messages m WHERE NOT EXISTS "
        "(SELECT 1 FROM message_context x WHERE x.message_id = m.id) ORDER BY id LIMIT 1",
    )
    c("MATCH (m:Message {id: $id}) DETACH DELETE m", id=lonely)
    c("MATCH ()-[r:USED_CONTEXT]->() WITH r ORDER BY r._pg2neo_key LIMIT 1 SET r.rank = 777")
    synced.conn.execute("DELETE FROM pg2neo.changes")  # nothing queued besides what reconcile does
    queued: list[tuple[int, int]] = []

    engine_drain = Engine.drain

    def drain(engine: Engine) -> int:
        # Only reconcile's own one-per-key re-sync is queued: an echo of its writes would add a second event.
        queued.append(_pg(synced, "SELECT array[count(*), count(DISTINCT (tbl, key))] FROM pg2neo.changes"))
        return engine_drain(engine)

    monkeypatch.setattr(Engine, "drain", drain)
    report = verify(synced.dsn, synced.driver, synced.mapping)
    result = repair.reconcile(synced.dsn, synced.driver, synced.mapping, report.drifts, "neo4j-wins", True)
    assert queued[0][0] == queued[0][1] > 0
    assert not result.errors, result.errors
    assert _pg(synced, "SELECT name FROM tenants WHERE id = %s", (tenant,)) == "from graph"
    assert _pg(synced, "SELECT name FROM tenants WHERE id = 'dddddddd-0000-0000-0000-000000000000'") == "graph only"
    assert _pg(synced, "SELECT description FROM content_items WHERE neo4j_node_id = %s", (item,)) is None
    assert _pg(synced, "SELECT count(*) FROM messages WHERE neo4j_node_id = %s", (lonely,)) == 0
    assert _pg(synced, "SELECT count(*) FROM message_context WHERE rank = 777") == 1
    after = verify(synced.dsn, synced.driver, synced.mapping)
    assert after.drift_total == 0, counts(after)
    assert _pg(synced, "SELECT count(*) FROM pg2neo.changes") == 0


def test_neo4j_wins_moves_a_repointed_foreign_key(synced: Synced) -> None:
    msg = _pg(synced, "SELECT neo4j_node_id::text FROM messages ORDER BY id LIMIT 1")
    other = _pg(
        synced,
        "SELECT neo4j_node_id::text FROM threads WHERE id <> (SELECT thread_id FROM messages ORDER BY id LIMIT 1) "
        "ORDER BY id LIMIT 1",
    )
    synced.cypher(
        "MATCH (:Thread)-[r:CONTAINS_MESSAGE]->(m:Message {id: $m}) DELETE r WITH m "
        "MATCH (t:Thread {id: $t}) CREATE (t)-[:CONTAINS_MESSAGE]->(m)",
        m=msg,
        t=other,
    )
    result = _reconcile(synced, "neo4j-wins")
    assert not result.errors, result.errors
    moved = _pg(
        synced,
        "SELECT t.neo4j_node_id::text FROM messages m JOIN threads t ON t.id = m.thread_id WHERE m.neo4j_node_id = %s",
        (msg,),
    )
    assert moved == other
    assert verify(synced.dsn, synced.driver, synced.mapping).drift_total == 0


def test_last_write_wins_picks_the_newer_side(synced: Synced) -> None:
    graph_newer, pg_newer = _tenant(synced, 0), _tenant(synced, 1)
    synced.cypher(
        "MATCH (t:Tenant {id: $id}) SET t.name = 'graph is newer', t.updated_at = datetime() + duration('PT1H')",
        id=graph_newer,
    )
    synced.cypher("MATCH (t:Tenant {id: $id}) SET t.name = 'graph is older'", id=pg_newer)
    synced.pg_quiet("UPDATE tenants SET name = 'pg is newer' WHERE id = %s", (pg_newer,))  # trigger bumps updated_at
    result = _reconcile(synced, "last-write-wins")
    decisions = {c.drift.identity[0]: c.decision for c in result.planned if c.drift.scope == ":Tenant"}
    assert decisions == {graph_newer: "neo4j", pg_newer: "pg"}
    assert _pg(synced, "SELECT name FROM tenants WHERE id = %s", (graph_newer,)) == "graph is newer"
    names = synced.cypher("MATCH (t:Tenant {id: $id}) RETURN t.name AS n", id=pg_newer)
    assert names[0]["n"] == "pg is newer"
    assert verify(synced.dsn, synced.driver, synced.mapping).drift_total == 0


def test_manual_records_conflicts_and_resolve_settles_them(synced: Synced) -> None:
    a, b = _tenant(synced, 0), _tenant(synced, 1)
    synced.cypher("MATCH (t:Tenant) WHERE t.id IN [$a, $b] SET t.name = 'edited in graph'", a=a, b=b)
    result = _reconcile(synced, "manual")
    assert result.conflicts_recorded == 2
    rows = conflicts.list_conflicts(synced.conn)
    assert sorted(r["identity"][0] for r in rows) == sorted([a, b])
    assert all(r["neo4j_props"]["name"] == "edited in graph" for r in rows)
    assert verify(synced.dsn, synced.driver, synced.mapping).drift_total == 2  # nothing changed yet
    by_id = {r["identity"][0]: r["id"] for r in rows}
    repair.resolve_conflict(synced.dsn, synced.driver, synced.mapping, by_id[a], "neo4j")
    repair.resolve_conflict(synced.dsn, synced.driver, synced.mapping, by_id[b], "pg")
    assert _pg(synced, "SELECT name FROM tenants WHERE id = %s", (a,)) == "edited in graph"
    assert _pg(synced, "SELECT name FROM tenants WHERE id = %s", (b,)) != "edited in graph"
    assert conflicts.list_conflicts(synced.conn) == []
    assert verify(synced.dsn, synced.driver, synced.mapping).drift_total == 0
    with pytest.raises(repair.ReconcileError):
        repair.resolve_conflict(synced.dsn, synced.driver, synced.mapping, by_id[a], "pg")


def test_custom_policy_applies_the_functions_decision(synced: Synced, tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "my_policy.py").write_text(
        "calls = []\n"
        "def decide(pg_row, neo4j_props, context):\n"
        "    calls.append(context)\n"
        "    if neo4j_props and neo4j_props.get('title') == 'keep me':\n"
        "        return 'neo4j'\n"
        "    if neo4j_props and neo4j_props.get('title') == 'leave me':\n"
        "        return None\n"
        "    return 'pg'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    keep, revert, leave = _item(synced, 0), _item(synced, 1), _item(synced, 2)
    c = synced.cypher
    c("MATCH (t:ContentItem {id: $id}) SET t.title = 'keep me'", id=keep)
    c("MATCH (t:ContentItem {id: $id}) SET t.title = 'revert me'", id=revert)
    c("MATCH (t:ContentItem {id: $id}) SET t.title = 'leave me'", id=leave)
    result = _reconcile(synced, "custom:my_policy:decide")
    assert sorted(str(x.decision) for x in result.planned) == ["None", "neo4j", "pg"]
    assert _pg(synced, "SELECT title FROM content_items WHERE neo4j_node_id = %s", (keep,)) == "keep me"
    assert c("MATCH (t:ContentItem {id: $id}) RETURN t.title AS n", id=revert)[0]["n"] != "revert me"
    after = verify(synced.dsn, synced.driver, synced.mapping)
    assert counts(after) == {":ContentItem": {"mismatch": 1}}
    assert after.drifts[0].identity == (leave,)
    import my_policy  # type: ignore[import-not-found]

    assert {"scope", "kind", "identity", "table"} <= set(my_policy.calls[0])
    json.dumps(my_policy.calls)


def test_unknown_policy_is_an_error() -> None:
    with pytest.raises(repair.ReconcileError, match="unknown policy"):
        repair.decider_for("whatever")
