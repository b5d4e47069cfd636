"""The infrastructure of the scale-out path: the local Kafka + Connect with Debezium, the connector from the mapping,
the checks of what Debezium needs, and raw Debezium events as they arrive (before any sink).

Place in the data flow: capture (WAL, Debezium in Kafka Connect) -> transport (Kafka). Real servers only: the
session's PostgreSQL and the session's `kafka` (tests/integration/kafka/conftest.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from kafka_support import KafkaEvent, KafkaSource, wait_snapshot_committed

from pg2neo.devstack.kafka import LocalKafka
from pg2neo.devstack.process import free_port
from pg2neo.transport.debezium import PLACEHOLDER

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

TEAM = "11111111-1111-1111-1111-111111111111"
OTHER = "22222222-2222-2222-2222-222222222222"
Consume = Callable[..., list[KafkaEvent]]


def _fix_identity(source: KafkaSource) -> None:
    source.execute("ALTER TABLE people REPLICA IDENTITY USING INDEX people_neo4j_node_id_key")


def _seed(source: KafkaSource) -> None:
    source.execute(
        "INSERT INTO teams VALUES (%s, 'Alpha', 1234.50, '2020-02-03', '2024-01-02 03:04:05.123456+02', "
        "'2024-01-02 03:04:05.5', '1 year 2 mons 3 days 04:05:06.5', '12:34:56.789', '\\xdeadbeef', 'short', "
        "ARRAY['a', 'b'], '{\"x\": [1, 2.50]}', 'hidden'), "
        "(%s, 'Beta', NULL, NULL, NULL, NULL, NULL, NULL, "
        # out-of-line TOAST: random hex (text) and random bytes (bytea) do not compress below the threshold
        " decode((SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 1000)), 'hex'), "
        " (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 1000)), NULL, NULL, NULL)",
        (TEAM, OTHER),
    )
    source.execute(
        "INSERT INTO people (id, name, team_id) SELECT g, 'p' || g, %s FROM generate_series(1, 5) g", (TEAM,)
    )
    source.execute("INSERT INTO memberships SELECT g, %s, 'member' FROM generate_series(1, 3) g", (OTHER,))


def _by_op(events: list[KafkaEvent], topic: str, op: str) -> list[KafkaEvent]:
    return [e for e in events if e.topic == topic and e.op == op]


def test_check_says_what_debezium_needs_and_config_hides_the_password(source: KafkaSource) -> None:
    check = source.pg2neo("kafka", "check", "--name", source.name)
    assert check.returncode == 2, check.stdout + check.stderr
    text = " ".join(check.stdout.split())
    assert "blocking: public.people: a delete's event carries only the replica identity (id)" in text
    assert "ALTER TABLE public.people REPLICA IDENTITY USING INDEX people_neo4j_node_id_key;" in text
    refused = source.pg2neo("kafka", "register", "--connect-url", source.kafka.info().connect_url, "--name", "x")
    assert refused.returncode == 2 and "REPLICA IDENTITY" in refused.stderr, refused.stdout + refused.stderr

    _fix_identity(source)
    check = source.pg2neo("kafka", "check", "--name", source.name)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "warning: server: max_slot_wal_keep_size is unlimited" in " ".join(check.stdout.split())

    password = source.servers.pg_dsn.split(":")[2].split("@")[0]
    config = source.pg2neo("kafka", "config", "--name", source.name)
    assert config.returncode == 0, config.stderr
    assert password not in config.stdout + config.stderr
    doc = json.loads(config.stdout)
    assert doc["database.password"] == "********" and "register" in config.stderr
    assert doc["database.dbname"] == source.name and doc["slot.name"] == source.names.slot
    assert "secret" not in doc["column.include.list"]
    ref = source.pg2neo("kafka", "config", "--name", source.name, "--password-ref", "${env:PG_PASSWORD}")
    assert json.loads(ref.stdout)["database.password"] == "${env:PG_PASSWORD}"


def test_register_says_when_connect_is_away_or_refuses(source: KafkaSource) -> None:
    _fix_identity(source)
    away = f"http://127.0.0.1:{free_port()}"
    done = source.pg2neo("kafka", "register", "--connect-url", away, "--name", source.name)
    assert done.returncode == 2
    assert f"cannot reach Kafka Connect at {away}" in done.stderr and "Traceback" not in done.stderr
    # Connect validates the configuration (Debezium logs in to PostgreSQL) before it keeps it
    done = source.pg2neo(
        "kafka", "register", "--connect-url", source.kafka.info().connect_url, "--name", source.name,
        "--password-ref", "not-the-password",
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refused the connector" in done.stderr and "not-the-password" not in done.stderr


def test_snapshot_and_live_changes_arrive_exact(source: KafkaSource, consume: Consume) -> None:
    _fix_identity(source)
    _seed(source)
    source.register()
    teams, people, members = source.topic("teams"), source.topic("people"), source.topic("memberships")
    events = consume(
        [teams, people, members],
        lambda ev: len(_by_op(ev, teams, "r")) == 2 and len(_by_op(ev, people, "r")) == 5
        and len(_by_op(ev, members, "r")) == 3,
    )  # fmt: skip
    alpha = next(e for e in _by_op(events, teams, "r") if e.key == {"id": TEAM})
    row = alpha.value["after"]
    assert row == {
        "id": TEAM,
        "name": "Alpha",
        "budget": "1234.50",  # decimal.handling.mode=string: exact
        "founded": 18295,  # days since 1970-01-01
        "created": "2024-01-02T01:04:05.123456Z",  # timestamptz, in UTC
        "seen": 1704164645500000,  # timestamp: microseconds since the epoch
        "shift": "P1Y2M3DT4H5M6.5S",
        "wake": 45296789000,  # time: microseconds since midnight
        "photo": "deadbeef",
        "body": "short",
        "tags": ["a", "b"],
        "meta": '{"x": [1, 2.50]}',
    }  # and not `secret`: unmapped columns are not captured
    assert alpha.value["source"]["snapshot"] != "false"
    person = _by_op(events, people, "r")[0]
    assert set(person.key) == {"neo4j_node_id"}  # keyed by the node key, not the primary key
    assert set(person.value["after"]) == {"id", "neo4j_node_id", "name", "team_id"}
    assert _by_op(events, members, "r")[0].key.keys() == {"person_id", "team_id"}

    source.execute("UPDATE teams SET name = 'Beta!' WHERE id = %s", (OTHER,))  # TOASTed body and photo untouched
    source.execute("INSERT INTO people (id, name, team_id) VALUES (100, 'new', %s)", (OTHER,))
    source.execute("UPDATE people SET name = 'renamed' WHERE id = 1")
    source.execute("DELETE FROM memberships WHERE person_id = 1")
    source.execute("DELETE FROM people WHERE id = 1")
    source.execute("TRUNCATE memberships")
    events = consume(
        [teams, people, members],
        lambda ev: bool(_by_op(ev, members, "t") and _by_op(ev, teams, "u")) and len(_by_op(ev, people, "d")) == 1,
    )
    beta = _by_op(events, teams, "u")[0].value
    assert beta["after"]["name"] == "Beta!"
    # unchanged TOASTed values: the placeholder, as text even for bytea (not hex-encoded)
    assert beta["after"]["body"] == PLACEHOLDER and beta["after"]["photo"] == PLACEHOLDER
    assert [e.value["after"]["name"] for e in _by_op(events, people, "c")] == ["new"]
    assert [e.value["after"]["name"] for e in _by_op(events, people, "u")] == ["renamed"]
    deleted = _by_op(events, people, "d")[0]
    # REPLICA IDENTITY USING INDEX: the delete carries the node key, and a tombstone with that key follows it
    assert deleted.value["before"]["neo4j_node_id"] == deleted.key["neo4j_node_id"]
    tombstones = [e for e in events if e.topic == people and e.value is None]
    assert [t.key for t in tombstones] == [deleted.key]
    assert _by_op(events, members, "d")[0].value["before"]["person_id"] == 1
    source_position = deleted.value["source"]
    assert isinstance(source_position["lsn"], int) and source_position["txId"]


def test_events_keep_flowing_across_broker_and_connect_restarts(
    source: KafkaSource, consume: Consume, kafka: LocalKafka
) -> None:
    _fix_identity(source)
    _seed(source)
    source.register()
    people = source.topic("people")
    consume([people], lambda ev: len(_by_op(ev, people, "r")) == 5)
    # Killed before Connect commits the offset past the snapshot, Debezium would take the snapshot again after the
    # restart (at-least-once); from then on it streams from its slot: the new rows must arrive as `c` events.
    wait_snapshot_committed(kafka.info().connect_url, source.name)
    ports = dict(kafka.ports)

    kafka.stop_broker(kill=True)
    assert kafka.status()["broker"]["up"] is False
    source.execute("INSERT INTO people (id, name) VALUES (201, 'while the broker is down')")
    kafka.start_broker()
    source.execute("INSERT INTO people (id, name) VALUES (202, 'after the broker restart')")
    consume([people], lambda ev: {201, 202} <= {e.value["after"]["id"] for e in _by_op(ev, people, "c")})

    kafka.stop_connect(kill=True)
    assert kafka.status()["connect"]["up"] is False
    source.execute("INSERT INTO people (id, name) VALUES (203, 'while Connect is down')")
    kafka.start_connect()
    source.execute("INSERT INTO people (id, name) VALUES (204, 'after the Connect restart')")
    consume([people], lambda ev: {203, 204} <= {e.value["after"]["id"] for e in _by_op(ev, people, "c")}, 180)
    assert kafka.ports == ports  # same ports (and data: the snapshot's events are still there)
    status = kafka.status()
    assert status["broker"]["up"] and status["connect"]["up"]
    assert status["connect"]["connectors"][source.name]["state"] == "RUNNING"
