"""Unit tests of capture/triggers.py and the schema grants (no servers): the generated capture functions and triggers.

Capture functions pin the session settings that change a key's text form, and only when the key needs it; they run
as their owner (SECURITY DEFINER) with a pinned search_path; only registered own writes are skipped; every trigger
fires ALWAYS; partitions get TRUNCATE triggers; the service grants create nothing.
"""

from __future__ import annotations

import re

import pytest
from psycopg import sql

from pg2neo.capture.triggers import (
    DROP_OLD_FUNCTIONS,
    SKIP_OWN_WRITE,
    TRUNCATE_FUNCTION,
    _pinned,
    function_name,
    partition_function_name,
    partition_statements,
    table_statements,
    trigger_statements,
)
from pg2neo.mapping.plan import Column, Mapping, NodeTable, SelectAs, ValueKind
from pg2neo.transport.schema import SCHEMA_SQL, service_grant_statements


@pytest.mark.parametrize(
    ("key_types", "pinned"),
    [
        (("bigint",), False),
        (("text", "integer"), False),
        (("uuid",), False),
        (("character varying(20)",), False),
        (("numeric(12,2)",), False),
        (("timestamp with time zone",), True),
        (("date",), True),
        (("bigint", "bytea"), True),
        (("double precision",), True),
        (("interval",), True),
        (("time without time zone",), True),
        (("public.mood",), True),  # an enum is safe, but a user-defined name cannot be told apart from a domain
    ],
)
def test_settings_are_pinned_only_for_keys_whose_text_depends_on_them(key_types: tuple[str, ...], pinned: bool) -> None:
    text = _pinned(key_types, ()).as_string()
    assert ("\"timezone\" = 'UTC'" in text) is pinned
    if pinned:
        assert "\"datestyle\" = 'ISO, YMD'" in text and "\"intervalstyle\" = 'iso_8601'" in text


# -- privileges, own writes, ALWAYS, partitions (issue 14, items 3 and 9) --------------------------------------------

READING = NodeTable(
    table="public.reading",
    schema="public",
    name="reading",
    labels=("Reading",),
    key_columns=("id", "region"),
    key_props=("id", "region"),
    key_types=("integer", "text"),
    columns=(
        Column("id", "id", "integer", ValueKind.INT, SelectAs.RAW),
        Column("region", "region", "text", ValueKind.TEXT, SelectAs.RAW),
    ),
)
MAPPING = Mapping(nodes=(READING,), joins=())


def _text(statements: list[sql.Composable]) -> list[str]:
    return [s.as_string() for s in statements]


def _created_triggers(texts: list[str]) -> list[tuple[str, str]]:
    found = [re.search(r'CREATE TRIGGER "(\w+)" \w+ [\w ]+? ON ("\w+"\."\w+")', t) for t in texts]
    return [(m.group(1), m.group(2)) for m in found if m]


def test_capture_functions_run_as_their_owner_with_a_pinned_search_path() -> None:
    functions = [t for t in _text(trigger_statements(MAPPING, frozenset({"public.reading"}))) if "FUNCTION" in t]
    created = [t for t in functions if t.startswith("CREATE OR REPLACE FUNCTION")]
    assert len(created) == 2  # the row function and the partition TRUNCATE function
    for text in created:
        assert "SECURITY DEFINER SET search_path = pg_catalog, pg_temp" in text
    schema = SCHEMA_SQL + TRUNCATE_FUNCTION
    assert schema.count("CREATE OR REPLACE FUNCTION") == schema.count("SECURITY DEFINER SET search_path = pg_catalog")
    assert functions[-1] == "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pg2neo FROM PUBLIC"


def test_the_origin_setting_alone_skips_nothing() -> None:
    body = _text(table_statements(READING))[0]
    # The registry is read only under the setting's test, so writes that do not set it never read it.
    gate = body.index("current_setting(''pg2neo.origin'', true) = ''pg2neo'' THEN")
    registry = body.index("FROM pg2neo.own_writes WHERE txid = pg_current_xact_id()")
    skip = body.index("RETURN NULL;  -- written by pg2neo itself")
    assert gate < registry < skip < body.index("IF TG_OP = ''INSERT''")
    assert "pg2neo.own_writes" in TRUNCATE_FUNCTION
    assert "IF current_setting('pg2neo.origin', true) = 'pg2neo' THEN\n        IF EXISTS" in SKIP_OWN_WRITE


def test_every_capture_trigger_is_enabled_always() -> None:
    partitions = (("public", "reading_a"), ("part", "reading_b"))
    texts = _text(trigger_statements(MAPPING, frozenset({"public.reading"}), {"public.reading": partitions}))
    created = _created_triggers(texts)
    always = {
        (m.group(2), m.group(1))
        for m in (re.match(r'ALTER TABLE ("\w+"\."\w+") ENABLE ALWAYS TRIGGER "(\w+)"', t) for t in texts)
        if m
    }
    assert set(created) == always
    assert ("pg2neo_capture_truncate", '"part"."reading_b"') in created
    assert ("pg2neo_capture_truncate_end", '"public"."reading_a"') in created
    assert ("pg2neo_capture_truncate_begin", '"public"."reading"') in created
    assert "ALTER TABLE pg2neo.own_writes ENABLE ALWAYS TRIGGER forget_at_commit" in SCHEMA_SQL


def test_partition_triggers_only_for_partitioned_tables() -> None:
    plain = _created_triggers(_text(trigger_statements(MAPPING)))
    assert sorted(name for name, _ in plain) == ["pg2neo_capture", "pg2neo_capture_truncate", "pg2neo_capture_update"]
    part = _text(partition_statements(READING, (("public", "reading_a"),)))
    body = part[0]
    # A partition queues its rows' keys, unless an ancestor is being truncated whole in the same statement.
    assert "pg_partition_ancestors(TG_RELID)" in body and "TG_RELID::regclass::text" in body
    assert "SELECT $1, ''''D'''', ARRAY[r.\"id\"::text, r.\"region\"::text] FROM " in body


def test_service_grants_create_nothing_and_leave_the_capture_tables_alone() -> None:
    texts = _text(service_grant_statements("svc", MAPPING))
    assert not [t for t in texts if "CREATE" in t or "TRUNCATE" in t or "OWNER" in t]
    assert 'REVOKE ALL ON "pg2neo"."own_writes", "pg2neo"."truncating" FROM "svc"' in texts
    assert 'GRANT INSERT ON pg2neo.own_writes TO "svc"' in texts
    assert 'GRANT SELECT ON "public"."reading" TO "svc"' in texts
    assert texts.index('GRANT INSERT ON pg2neo.own_writes TO "svc"') > texts.index(
        'REVOKE ALL ON "pg2neo"."own_writes", "pg2neo"."truncating" FROM "svc"'
    )


def test_capture_functions_are_named_after_the_specification() -> None:
    assert function_name("public.reading").as_string().startswith('"pg2neo"."sync_to_neo4j_reading_')
    assert partition_function_name("public.reading").as_string().startswith('"pg2neo"."sync_to_neo4j_part_reading_')
    long = "public." + "x" * 80
    for name in (function_name(long), partition_function_name(long)):
        assert len(name.as_string().split(".")[1].strip('"')) <= 63  # PostgreSQL's identifier limit


def test_functions_of_the_old_names_are_dropped_once_no_trigger_calls_them() -> None:
    texts = _text(trigger_statements(MAPPING))
    drop = texts.index(DROP_OLD_FUNCTIONS)
    assert drop > max(i for i, t in enumerate(texts) if t.startswith("CREATE TRIGGER"))
    assert "'^capture_(part_)?.*_[0-9a-f]{8}$'" in DROP_OLD_FUNCTIONS
    assert "NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgfoid = p.oid)" in DROP_OLD_FUNCTIONS
