"""Debezium events to the rows the apply core takes, their source positions, and the tokens that pair a waiting
relationship with its end node (pure, no server)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest

from pg2neo.apply.batch import BatchBuilder
from pg2neo.apply.endpoints import Awaiting, token
from pg2neo.errors import MappingError
from pg2neo.mapping.plan import Column, ForeignKeyRel, Mapping, NodeTable, SelectAs, ValueKind
from pg2neo.transport.debezium import PLACEHOLDER
from pg2neo.transport.events import UNAVAILABLE, BadEvent, EventDecoder, source_position


def col(name: str, kind: ValueKind, type_name: str, select: SelectAs = SelectAs.RAW, **kw: Any) -> Column:
    return Column(name, name, type_name, kind, select, **kw)


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
        col("id", ValueKind.INT, "bigint"),
        col("body", ValueKind.TEXT, "text"),
        col("price", ValueKind.NUMERIC, "numeric", SelectAs.TEXT),
        col("day", ValueKind.DATE, "date"),
        col("seen", ValueKind.TIMESTAMP, "timestamp without time zone"),
        col("at", ValueKind.TIMESTAMPTZ, "timestamp with time zone"),
        col("photo", ValueKind.BYTES, "bytea"),
        col("tags", ValueKind.ARRAY, "text[]", element_kind=ValueKind.TEXT),
    ),
)
COMMENTS = NodeTable(
    "public.comments",
    "public",
    "comments",
    ("Comment",),
    ("id",),
    ("id",),
    ("bigint",),
    (col("id", ValueKind.INT, "bigint"),),
    # references docs.id, while docs are keyed by neo4j_node_id: followed by the `id` property
    fk_rels=(ForeignKeyRel("ON", ("doc_id",), "public.docs", "Doc", ("uid",), ("id",), ("neo4j_node_id",)),),
)
MAPPING = Mapping((DOCS, COMMENTS), ())
TOPICS = {"s.public.docs": "public.docs", "s.public.comments": "public.comments"}
UID = "0b6f0c3e-6a0e-4a55-9c3d-3f8f5a3f2d10"


def event(op: str, after: dict[str, Any] | None, before: dict[str, Any] | None = None, **source: Any) -> bytes:
    src = {"lsn": 5000, "sequence": json.dumps(["4000", "5000"]), "snapshot": "false", "ts_ms": 1700000000000}
    src.update(source)
    return json.dumps({"op": op, "before": before, "after": after, "source": src}).encode()


DOC = {
    "neo4j_node_id": UID,
    "id": 7,
    "body": "text",
    "price": "1234.50",
    "day": 19724,
    "seen": 1704164645500000,
    "at": "2024-01-02T01:04:05.123456Z",
    "photo": "deadbeef",
    "tags": ["a", "b"],
}


def test_a_create_decodes_to_the_forms_the_reader_gives() -> None:
    change = EventDecoder(MAPPING, TOPICS).decode("s.public.docs", event("c", DOC))
    assert change.key == (UID,)
    assert change.row is not None
    key, *values = change.row
    assert key == (UID,)
    assert values == [
        UID,
        7,
        "text",
        "1234.50",
        dt.date(2024, 1, 2),
        dt.datetime(2024, 1, 2, 3, 4, 5, 500000),
        dt.datetime(2024, 1, 2, 1, 4, 5, 123456, tzinfo=dt.UTC),
        bytes.fromhex("deadbeef"),
        ["a", "b"],
    ]
    # the version: the change's own LSN (not sequence[0], which a Connect restart restores too late)
    assert change.position.epoch == 5000


def test_a_foreign_key_by_reference_carries_the_referenced_value_converted_as_the_target_converts_it() -> None:
    change = EventDecoder(MAPPING, TOPICS).decode("s.public.comments", event("c", {"id": 1, "doc_id": 7}))
    assert change.row == (("1",), 1, 7)
    batch = BatchBuilder(MAPPING, by_reference=True).new_batch()
    BatchBuilder(MAPPING, by_reference=True).add_rows(batch, COMMENTS, [change.row], [9])
    assert batch.nodes["public.comments"].links == [[{"k": [1], "t": [7], "v": 9}]]


def test_an_unchanged_toasted_value_is_marked_not_decoded() -> None:
    after = {**DOC, "body": PLACEHOLDER}
    change = EventDecoder(MAPPING, TOPICS).decode("s.public.docs", event("u", after))
    assert change.row is not None and change.row[3] is UNAVAILABLE
    assert change.toasted == ("body",)


def test_an_update_that_changes_the_node_key_names_the_old_key() -> None:
    other = "1a2b3c4d-0000-0000-0000-000000000000"
    change = EventDecoder(MAPPING, TOPICS).decode("s.public.docs", event("u", DOC, before={"neo4j_node_id": other}))
    assert change.previous_key == (other,)
    same = EventDecoder(MAPPING, TOPICS).decode("s.public.docs", event("u", DOC, before={"neo4j_node_id": UID}))
    assert same.previous_key is None


def test_a_delete_without_the_key_in_its_before_image_says_how_to_fix_it() -> None:
    with pytest.raises(BadEvent, match="REPLICA IDENTITY"):
        EventDecoder(MAPPING, TOPICS).decode("s.public.docs", event("d", None, before={"id": 7}))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "not a JSON document"),
        (b'{"op": "c"}', "not a Debezium change event"),
        (b'{"op": "x", "source": {"lsn": 1}}', "unknown operation"),
        (b'{"op": "c", "source": {"lsn": 1}, "after": {"neo4j_node_id": "x"}}', "missing from the event"),
        (b'{"op": "c", "source": {}, "after": {}}', "no source position"),
    ],
)
def test_bad_events_say_what_is_wrong(value: bytes, reason: str) -> None:
    with pytest.raises(BadEvent, match=reason):
        EventDecoder(MAPPING, TOPICS).decode("s.public.docs", value)


def test_positions_are_the_change_lsn_and_snapshot_reads_rank_below_every_change() -> None:
    snapshot = source_position({"lsn": 3000, "snapshot": "true"})
    # a transaction open during the snapshot wrote below its LSN, and must still win over the snapshot's row
    in_flight = source_position({"lsn": 2900, "sequence": '["2800", "2900"]'})
    replayed = source_position({"lsn": 2900, "sequence": '["9999", "2900"]'})  # sequence[0] restored late
    assert snapshot.snapshot and snapshot.epoch == 0 < in_flight.epoch == replayed.epoch == 2900


def test_tokens_are_equal_for_equal_values_from_either_side() -> None:
    assert token("Doc", ("id",), [7]) == token("Doc", ("id",), [7])
    assert token("Doc", ("id",), [7]) != token("Doc", ("id",), ["7"])
    assert token("Doc", ("id",), [7]) != token("Item", ("id",), [7])
    assert token("D", ("p",), [Decimal("1.50")]) != token("D", ("p",), [Decimal("1.5")])
    assert token("D", ("b",), [b"\x00"]) == token("D", ("b",), [bytearray(b"\x00")])


def test_awaiting_finds_targets_by_reference_and_refuses_an_unmapped_referenced_column() -> None:
    awaiting = Awaiting(MAPPING)
    [plan] = awaiting.links["public.comments"]
    assert plan.target.label == "Doc" and plan.target.props == ("id",)
    assert any("`pg2neo_Doc_id`" in s for s in awaiting.schema_statements(MAPPING))
    without_id = NodeTable(
        DOCS.table,
        DOCS.schema,
        DOCS.name,
        DOCS.labels,
        DOCS.key_columns,
        DOCS.key_props,
        DOCS.key_types,
        tuple(c for c in DOCS.columns if c.name != "id"),
    )
    with pytest.raises(MappingError, match="does not map"):
        Awaiting(Mapping((without_id, COMMENTS), ()))


def test_numeric_special_values_arrive_under_debezium_names_and_decode_as_postgresql_writes_them() -> None:
    decoder = EventDecoder(MAPPING, TOPICS)
    for sent, expected in (("POSITIVE_INFINITY", "Infinity"), ("NEGATIVE_INFINITY", "-Infinity"), ("NaN", "NaN")):
        change = decoder.decode("s.public.docs", event("c", {**DOC, "price": sent}))
        assert change.row is not None and change.row[4] == expected
