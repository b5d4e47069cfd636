"""The Debezium connector configuration, the mapping checker and the event decoding (pure, no server)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest

from pg2neo.mapping.convert import OutOfRange
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
from pg2neo.transport.debezium import (
    PLACEHOLDER,
    ConnectorNames,
    ReplicaIdentity,
    check_mapping,
    connector_config,
    topic_of,
)
from pg2neo.transport.events import UNAVAILABLE, BadEvent, EventDecoder, source_position


def col(name: str, kind: ValueKind, type_name: str, select: SelectAs = SelectAs.RAW, **kw: object) -> Column:
    return Column(name, name, type_name, kind, select, **kw)  # type: ignore[arg-type]


TEAMS = NodeTable(
    "public.teams",
    "public",
    "teams",
    ("Team",),
    ("id",),
    ("id",),
    ("uuid",),
    (col("id", ValueKind.UUID, "uuid"), col("budget", ValueKind.NUMERIC, "numeric")),
)
DOCS = NodeTable(
    "public.docs",
    "public",
    "docs",
    ("Doc",),
    ("neo4j_node_id",),
    ("uid",),
    ("uuid",),
    (
        col("neo4j_node_id", ValueKind.UUID, "uuid"),
        col("body", ValueKind.TEXT, "text"),
        col("at", ValueKind.TIMESTAMPTZ, "timestamp with time zone"),
        col("day", ValueKind.DATE, "date"),
        col("tags", ValueKind.ARRAY, "text[]", element_kind=ValueKind.TEXT),
    ),
    fk_rels=(ForeignKeyRel("OF", ("team_id",), "public.teams", "Team", ("id",), ("id",), ("id",)),),
)
JOIN = JoinTable(
    "public.links",
    "public",
    "links",
    "LINKS",
    ("team_id", "doc_id"),
    ("uuid", "uuid"),
    Endpoint("public.teams", "Team", ("id",), ("team_id",), ("id",), ("id",)),
    Endpoint("public.docs", "Doc", ("uid",), ("doc_id",), ("neo4j_node_id",), ("neo4j_node_id",)),
    (col("weight", ValueKind.NUMERIC, "numeric"),),
    ("weight",),
)
MAPPING = Mapping((TEAMS, DOCS), (JOIN,))
DSN = "postgresql://app:s3cret@db.example:6543/shop"


def test_connector_config_captures_only_the_mapped_tables_and_columns() -> None:
    config = connector_config(MAPPING, DSN, ConnectorNames("shop-sync"))
    assert config["database.hostname"] == "db.example"
    assert config["database.port"] == "6543"
    assert config["database.user"] == "app"
    assert config["database.password"] == "s3cret"
    assert config["database.dbname"] == "shop"
    assert config["plugin.name"] == "pgoutput"
    assert config["publication.autocreate.mode"] == "filtered"
    assert config["slot.name"] == "shop_sync"
    assert config["table.include.list"] == r"public\.teams,public\.docs,public\.links"
    columns = config["column.include.list"].split(",")
    assert r"public\.docs\.team_id" in columns  # a relationship's column, though not a property
    assert r"public\.docs\.neo4j_node_id" in columns
    assert not any("secret" in c for c in columns)
    assert config["message.key.columns"] == "public.teams:id;public.docs:neo4j_node_id;public.links:team_id,doc_id"
    assert config["decimal.handling.mode"] == "string"
    assert config["interval.handling.mode"] == "string"
    assert config["time.precision.mode"] == "adaptive_time_microseconds"
    assert config["skipped.operations"] == "none"
    assert config["value.converter.schemas.enable"] == "false"
    assert int(config["heartbeat.interval.ms"]) > 0


def test_checker_asks_for_the_node_key_in_delete_events() -> None:
    identities = {
        "public.teams": ReplicaIdentity("d", ("id",)),
        "public.docs": ReplicaIdentity("d", ("id",)),  # the primary key, not neo4j_node_id
        "public.links": ReplicaIdentity("d", ("team_id", "doc_id")),
    }
    problems = check_mapping(MAPPING, identities)
    assert [p.table for p in problems] == ["public.docs"]
    assert "REPLICA IDENTITY USING INDEX" in problems[0].fix and "FULL" in problems[0].fix
    fixed = {**identities, "public.docs": ReplicaIdentity("i", ("neo4j_node_id",))}
    assert check_mapping(MAPPING, fixed) == []


def test_checker_refuses_what_needs_a_postgresql_read_or_is_not_exact() -> None:
    joined = ForeignKeyRel("OF", ("team_code",), "public.teams", "Team", ("id",), ("code",), ("id",))
    docs = NodeTable(
        "public.docs",
        "public",
        "docs",
        ("Doc",),
        ("neo4j_node_id",),
        ("uid",),
        ("uuid",),
        (col("neo4j_node_id", ValueKind.UUID, "uuid"), col("t", ValueKind.TIMETZ, "time with time zone")),
        fk_rels=(joined,),
    )
    problems = check_mapping(Mapping((TEAMS, docs), ()))
    text = "\n".join(str(p) for p in problems)
    assert "needs a PostgreSQL read" in text
    assert "column `t`" in text and "exclude it" in text


def _event(op: str, after: Any, before: Any = None) -> bytes:
    source = {"lsn": 500, "sequence": json.dumps(["400", "500"]), "snapshot": "false", "ts_ms": 1}
    return json.dumps({"op": op, "before": before, "after": after, "source": source}).encode()


def test_events_decode_to_the_values_the_reader_gives() -> None:
    names = ConnectorNames("s")
    decoder = EventDecoder(MAPPING, {topic_of(names, e.table): e.table for e in MAPPING.entries})
    uid = "2ccd05ab-2e53-4612-b2d0-95e8250a2bf1"
    team = "11111111-1111-1111-1111-111111111111"
    after = {
        "neo4j_node_id": uid,
        "body": PLACEHOLDER,
        "at": "2024-01-02T01:04:05.123456Z",
        "day": 18295,
        "tags": ["a", "b"],
        "team_id": team,
    }
    change = decoder.decode("s.public.docs", _event("u", after))
    assert change.key == (uid,)
    assert change.position.epoch == 400 and not change.position.snapshot
    assert change.toasted == ("body",)
    assert change.row == (
        (uid,),
        uid,
        UNAVAILABLE,
        dt.datetime(2024, 1, 2, 1, 4, 5, 123456, tzinfo=dt.UTC),
        dt.date(2020, 2, 3),
        ["a", "b"],
        team,
    )
    team_change = decoder.decode("s.public.teams", _event("r", {"id": team, "budget": "1234.50"}))
    assert team_change.row == ((team,), team, Decimal("1234.50"))
    deleted = decoder.decode("s.public.docs", _event("d", None, {"neo4j_node_id": uid}))
    assert deleted.row is None and deleted.key == (uid,)
    with pytest.raises(BadEvent, match="REPLICA IDENTITY"):
        decoder.decode("s.public.docs", _event("d", None, {"id": 5}))
    with pytest.raises(BadEvent, match="missing from the event"):
        decoder.decode("s.public.docs", _event("c", {"neo4j_node_id": uid}))
    with pytest.raises(BadEvent, match="not one of a mapped table"):
        decoder.decode("s.public.other", _event("c", {}))
    with pytest.raises(BadEvent, match="not a JSON"):
        decoder.decode("s.public.docs", b"{nope")


def test_timestamps_out_of_python_range_become_out_of_range() -> None:
    names = ConnectorNames("s")
    decoder = EventDecoder(MAPPING, {topic_of(names, e.table): e.table for e in MAPPING.entries})
    after = {"neo4j_node_id": "x", "body": None, "at": "infinity", "day": 10**9, "tags": None, "team_id": None}
    change = decoder.decode("s.public.docs", _event("c", after))
    assert change.row is not None
    assert isinstance(change.row[3], OutOfRange) and isinstance(change.row[4], OutOfRange)


def test_source_position_orders_transactions_by_the_previous_commit() -> None:
    first = source_position({"lsn": 120, "sequence": json.dumps([None, "120"]), "snapshot": "false"})
    second = source_position({"lsn": 110, "sequence": json.dumps(["150", "110"]), "snapshot": "false"})
    snap = source_position({"lsn": 100, "sequence": json.dumps([None, "100"]), "snapshot": "last"})
    assert snap.epoch < first.epoch < second.epoch
    assert snap.snapshot and not first.snapshot
