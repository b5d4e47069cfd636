"""The Debezium connector configuration and the checker of what Debezium needs from the mapping (pure, no server)."""

from __future__ import annotations

import dataclasses

import pytest

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
    carried_props,
    check_mapping,
    connector_config,
    connector_name_ok,
    topic_of,
)


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
    (
        col("id", ValueKind.UUID, "uuid"),
        col("budget", ValueKind.NUMERIC, "numeric"),
        col("code", ValueKind.TEXT, "text"),
    ),
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
DSN = "postgresql://app:s3cret@db.example:6543/shop?sslmode=require"
GOOD_IDENTITIES = {
    "public.teams": ReplicaIdentity("d", ("id",)),
    "public.docs": ReplicaIdentity("i", ("neo4j_node_id",)),
    "public.links": ReplicaIdentity("d", ("team_id", "doc_id")),
}


def test_connector_config_captures_only_the_mapped_tables_and_columns() -> None:
    config = connector_config(MAPPING, DSN, ConnectorNames("shop-sync"))
    assert config["database.hostname"] == "db.example"
    assert config["database.port"] == "6543"
    assert config["database.user"] == "app"
    assert config["database.password"] == "s3cret"
    assert config["database.dbname"] == "shop"
    assert config["database.sslmode"] == "require"
    assert config["plugin.name"] == "pgoutput"
    assert config["publication.autocreate.mode"] == "filtered"
    assert config["slot.name"] == "shop_sync"
    assert config["publication.name"] == "shop_sync_publication"
    assert config["topic.prefix"] == "shop-sync"
    assert config["table.include.list"] == r"public\.teams,public\.docs,public\.links"
    columns = config["column.include.list"].split(",")
    assert r"public\.docs\.team_id" in columns  # a relationship's column, though not a property
    assert r"public\.docs\.neo4j_node_id" in columns
    assert r"public\.links\.doc_id" in columns
    assert not any(c.endswith(r"\.id") and "docs" in c for c in columns)  # docs' primary key is not mapped
    assert config["message.key.columns"] == "public.teams:id;public.docs:neo4j_node_id;public.links:team_id,doc_id"


def test_connector_config_chooses_exact_value_forms_and_publishes_every_operation() -> None:
    config = connector_config(MAPPING, DSN)
    assert config["slot.name"] == "pg2neo" and config["topic.prefix"] == "pg2neo"
    assert config["decimal.handling.mode"] == "string"
    assert config["interval.handling.mode"] == "string"
    assert config["time.precision.mode"] == "adaptive_time_microseconds"
    assert config["binary.handling.mode"] == "hex"
    assert config["hstore.handling.mode"] == "json"
    assert config["skipped.operations"] == "none"
    assert config["tombstones.on.delete"] == "true"
    assert config["unavailable.value.placeholder"] == PLACEHOLDER == "__debezium_unavailable_value"
    assert config["key.converter.schemas.enable"] == config["value.converter.schemas.enable"] == "false"
    assert int(config["heartbeat.interval.ms"]) > 0
    assert config["provide.transaction.metadata"] == "false"
    assert connector_config(MAPPING, DSN, transaction_metadata=True)["provide.transaction.metadata"] == "true"


def test_connector_config_reads_key_value_dsns() -> None:
    config = connector_config(MAPPING, "host=10.0.0.5 port=5433 dbname=app user=u password='a b'")
    assert (config["database.hostname"], config["database.port"], config["database.dbname"]) == (
        "10.0.0.5",
        "5433",
        "app",
    )
    assert config["database.password"] == "a b"
    assert "database.sslmode" not in config


def test_names_and_topics_derive_from_the_connector_name() -> None:
    names = ConnectorNames("Shop.Sync-1")
    assert names.slot == "shop_sync_1"  # a valid replication slot name
    assert names.publication == "shop_sync_1_publication"
    assert topic_of(names, "public.docs") == "Shop.Sync-1.public.docs"
    assert names.heartbeat_topic == "__debezium-heartbeat.Shop.Sync-1"
    assert connector_name_ok("shop-sync.v2")
    assert not connector_name_ok("shop sync") and not connector_name_ok("-x") and not connector_name_ok("a/b")


def test_checker_asks_for_the_node_key_in_delete_events() -> None:
    assert check_mapping(MAPPING, GOOD_IDENTITIES) == []
    identities = {**GOOD_IDENTITIES, "public.docs": ReplicaIdentity("d", ("id",))}  # the primary key only
    problems = check_mapping(MAPPING, identities)
    assert [(p.table, p.blocking) for p in problems] == [("public.docs", True)]
    assert "not the key (neo4j_node_id)" in problems[0].what
    assert "REPLICA IDENTITY USING INDEX" in problems[0].fix and "REPLICA IDENTITY FULL" in problems[0].fix
    named = {**identities, "public.docs": ReplicaIdentity("d", ("id",), key_index="docs_neo4j_node_id_key")}
    assert "REPLICA IDENTITY USING INDEX docs_neo4j_node_id_key;" in check_mapping(MAPPING, named)[0].fix
    full = {**GOOD_IDENTITIES, "public.docs": ReplicaIdentity("f", ("id", "neo4j_node_id", "body"))}
    assert check_mapping(MAPPING, full) == []


@pytest.mark.parametrize("identity", [ReplicaIdentity("d", ()), ReplicaIdentity("n", ())])
def test_checker_refuses_a_table_without_replica_identity(identity: ReplicaIdentity) -> None:
    problems = check_mapping(MAPPING, {**GOOD_IDENTITIES, "public.links": identity})
    assert [p.table for p in problems] == ["public.links"]
    assert "refuses every UPDATE and DELETE" in problems[0].what
    assert "ALTER TABLE public.links REPLICA IDENTITY" in problems[0].fix


def test_a_relationship_to_a_non_key_column_needs_that_column_on_the_target_node() -> None:
    by_code = ForeignKeyRel("OF", ("team_code",), "public.teams", "Team", ("id",), ("code",), ("id",))
    docs = NodeTable(
        "public.docs",
        "public",
        "docs",
        ("Doc",),
        ("neo4j_node_id",),
        ("uid",),
        ("uuid",),
        (col("neo4j_node_id", ValueKind.UUID, "uuid"),),
        fk_rels=(by_code,),
    )
    carried = Mapping((TEAMS, docs), ())
    assert carried_props(carried, "public.teams", ("code",)) == ("code",)
    assert check_mapping(carried) == []  # teams' nodes carry `code`: the sink finds the end node by it
    teams_without_code = dataclasses.replace(TEAMS, columns=TEAMS.columns[:2])  # `code` excluded
    missing = Mapping((teams_without_code, docs), ())
    assert carried_props(missing, "public.teams", ("code",)) is None
    problems = check_mapping(missing)
    assert len(problems) == 1 and problems[0].blocking
    assert "do not carry them as properties" in problems[0].what
    assert "map code as a property of public.teams" in problems[0].fix


def test_checker_refuses_values_that_do_not_arrive_exact() -> None:
    docs = NodeTable(
        "public.docs",
        "public",
        "docs",
        ("Doc",),
        ("neo4j_node_id",),
        ("uid",),
        ("uuid",),
        (
            col("neo4j_node_id", ValueKind.UUID, "uuid"),
            col("t", ValueKind.TIMETZ, "time with time zone"),
            col("price", ValueKind.TEXT, "money", SelectAs.TEXT),
            col("doc", ValueKind.TEXT, "jsonb", SelectAs.JSONB_TEXT),
        ),
    )
    problems = check_mapping(Mapping((docs,), ()))
    text = "\n".join(str(p) for p in problems)
    assert all(p.blocking for p in problems) and len(problems) == 3
    for name in ("t", "price", "doc"):
        assert f"column `{name}`" in text
    assert "exclude it" in text
