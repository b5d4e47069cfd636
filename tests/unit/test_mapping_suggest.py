"""`pg2neo mapping suggest`, the pure part: names, the singularizer, keys, foreign-key types and directions, join
detection, exclusions, comments, and the YAML. No server: catalogs are written here as `CatalogTable`s, and the
suggested files go through the real validator (`resolve`) reading those tables instead of a live catalog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pg2neo.mapping import resolve as resolve_module
from pg2neo.mapping.catalog import Catalog, CatalogColumn, CatalogTable, ForeignKey
from pg2neo.mapping.model import load_file
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.suggest import (
    Suggestion,
    SuggestOptions,
    fk_role,
    fk_type,
    join_type,
    label_for,
    property_name,
    scalar,
    singular,
    suggest,
    words,
)
from pg2neo.mapping.suggest_catalog import TableFacts

# -- a catalog written by hand ----------------------------------------------------------------------------------------

Col = tuple[str, str] | tuple[str, str, bool]


def table(
    name: str,
    columns: list[Col],
    pk: tuple[str, ...] = (),
    unique: tuple[tuple[str, ...], ...] = (),
    fks: tuple[tuple[tuple[str, ...], str, tuple[str, ...]], ...] = (),
    schema: str = "public",
    partition_of: str | None = None,
    extension: str | None = None,
) -> TableFacts:
    """A table: columns (name, base type[, not null]); primary key columns are NOT NULL like in PostgreSQL."""
    cols = {}
    for spec in columns:
        col_name, base = spec[0], spec[1]
        not_null = bool(spec[2]) if len(spec) == 3 else col_name in pk
        array = base.startswith("_")
        cols[col_name] = CatalogColumn(
            name=col_name,
            type_name=base,
            base_type=base,
            type_kind="b",
            element_type=base[1:] if array else None,
            element_kind="b" if array else None,
            not_null=not_null,
            comparable=True,
        )
    keys = ((pk,) if pk else ()) + unique
    foreign = tuple(
        ForeignKey(f"fk_{name}_{i}", cols_, ref if "." in ref else f"public.{ref}", ref_cols)
        for i, (cols_, ref, ref_cols) in enumerate(fks)
    )
    return TableFacts(CatalogTable(schema, name, cols, pk, keys, foreign), partition_of, extension)


def validate(result: Suggestion, facts: list[TableFacts], tmp_path: Path) -> Mapping:
    """The suggested file through the real loader and validator, the catalog being `facts`."""
    path = tmp_path / "suggested.yaml"
    path.write_text(result.yaml())
    schemas = {f.table.schema for f in facts}
    catalog = Catalog(
        {f.table.qualified: f.table for f in facts},
        {s: tuple(sorted(f.table.name for f in facts if f.table.schema == s)) for s in schemas},
    )
    spec, index = load_file(path)
    return resolve_module.resolve(spec, index, catalog)


def entries(result: Suggestion) -> tuple[dict[str, Any], dict[str, Any]]:
    data = yaml.safe_load(result.yaml())
    return {n["table"]: n for n in data["nodes"]}, {r["table"]: r for r in data.get("relationships") or []}


USERS = table("users", [("id", "uuid"), ("email", "text", True)], pk=("id",), unique=(("email",),))
THREADS = table("threads", [("id", "int8"), ("title", "text")], pk=("id",))


# -- names ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plural", "expected"),
    [
        ("people", "person"), ("statuses", "status"), ("categories", "category"), ("children", "child"),
        ("addresses", "address"), ("classes", "class"), ("processes", "process"), ("boxes", "box"),
        ("taxes", "tax"), ("matches", "match"), ("wishes", "wish"), ("caches", "cache"), ("quizzes", "quiz"),
        ("buzzes", "buzz"), ("heroes", "hero"), ("shoes", "shoe"), ("movies", "movie"), ("cookies", "cookie"),
        ("wolves", "wolf"), ("knives", "knife"), ("archives", "archive"), ("analyses", "analysis"),
        ("crises", "crisis"), ("buses", "bus"), ("campuses", "campus"), ("viruses", "virus"), ("houses", "house"),
        ("warehouses", "warehouse"), ("causes", "cause"), ("courses", "course"), ("databases", "database"),
        ("aliases", "alias"), ("indices", "index"), ("matrices", "matrix"), ("devices", "device"),
        ("mice", "mouse"), ("criteria", "criterion"), ("menus", "menu"), ("users", "user"), ("keys", "key"),
        ("days", "day"), ("ids", "id"), ("logs", "log"), ("employees", "employee"), ("companies", "company"),
        ("releases", "release"), ("responses", "response"), ("potatoes", "potato"), ("geniuses", "genius"),
    ],
)  # fmt: skip
def test_singular_of_plurals(plural: str, expected: str) -> None:
    assert singular(plural) == expected


@pytest.mark.parametrize(
    "word",
    ["status", "bus", "analysis", "class", "access", "address", "news", "series", "species", "data", "stock",
     "person", "thread", "chunk", "sms", "gps", "dns", "information", "metadata", "campus", "axis", "feedback"],
)  # fmt: skip
def test_singular_leaves_singulars_alone(word: str) -> None:
    assert singular(word) == word


@pytest.mark.parametrize(
    ("table_name", "label"),
    [
        ("content_items", "ContentItem"), ("people", "Person"), ("statuses", "Status"), ("ContentItems", "ContentItem"),
        ("order-lines", "OrderLine"), ("Order Lines", "OrderLine"), ("news_items", "NewsItem"), ("data", "Data"),
        ("2fa_codes", "_2faCode"), ("HTTPRequests", "HttpRequest"), ("café_menus", "CafeMenu"), ("v2_users", "V2User"),
        ("stock", "Stock"), ("user_settings", "UserSetting"),
    ],
)  # fmt: skip
def test_label_is_singular_camel_case(table_name: str, label: str) -> None:
    assert label_for(table_name) == label


def test_words_split_every_spelling() -> None:
    assert words("contentItems") == words("content_items") == words("Content-Items") == ["content", "items"]
    assert words("___") == []


@pytest.mark.parametrize(
    ("columns", "target", "ref", "expected"),
    [
        (("thread_id",), "threads", ("id",), "IN_THREAD"),
        (("author_id",), "users", ("id",), "AUTHOR"),
        (("reviewer_id",), "users", ("id",), "REVIEWER"),
        (("created_by",), "users", ("id",), "CREATED_BY"),
        (("parent_thread_id",), "threads", ("id",), "PARENT_THREAD"),
        (("parent_code",), "regions", ("code",), "PARENT"),
        (("item_id",), "content_items", ("id",), "IN_CONTENT_ITEM"),
        (("content_item_id",), "content_items", ("id",), "IN_CONTENT_ITEM"),
        (("tariff_rate",), "tariffs", ("rate",), "IN_TARIFF"),
        (("dept_id",), "departments", ("id",), "IN_DEPARTMENT"),
        (("id",), "users", ("id",), "IN_USER"),  # a one-to-one extension table
        (("wh_region", "wh_num"), "warehouses", ("region_code", "num"), "IN_WAREHOUSE"),
        (("country_code", "city_name"), "cities", ("country_code", "name"), "IN_CITY"),
        (("ship_region", "ship_num"), "warehouses", ("region_code", "num"), "SHIP"),
        (("statusId",), "statuses", ("id",), "IN_STATUS"),
        (("personId",), "people", ("id",), "IN_PERSON"),
    ],
)
def test_foreign_key_types(columns: tuple[str, ...], target: str, ref: tuple[str, ...], expected: str) -> None:
    assert fk_type(columns, target, ref) == expected


def test_foreign_key_role() -> None:
    assert fk_role(("author_id",)) == ["author"]
    assert fk_role(("owner",)) == ["owner"]
    assert fk_role(("a_x", "b_y")) == []


@pytest.mark.parametrize(
    ("join", "start", "expected"),
    [
        ("thread_content", "threads", "HAS_CONTENT"), ("message_context", "messages", "HAS_CONTEXT"),
        ("stock", "warehouses", "STOCK"), ("students_courses", "students", "HAS_COURSE"),
        ("user_roles", "users", "HAS_ROLE"), ("friendships", "people", "FRIENDSHIP"), ("post_tag", "posts", "HAS_TAG"),
        ("enrollments", "students", "ENROLLMENT"),
    ],
)  # fmt: skip
def test_join_types(join: str, start: str, expected: str) -> None:
    assert join_type(join, start) == expected


@pytest.mark.parametrize(
    ("column", "prop"),
    [("title", "title"), ("Display Name", "Display_Name"), ("_pg2neo_flag", "pg2neo_flag"), ("1st", "_1st"),
     ("naïve", "naive"), ("日本", "column"), ("a-b", "a_b")],
)  # fmt: skip
def test_property_names(column: str, prop: str) -> None:
    assert property_name(column) == prop


@pytest.mark.parametrize("text", ["yes", "no", "on", "off", "null", "~", "true", "a b", "1abc", "x: y", "#c", "a,b"])
def test_scalars_read_back_as_the_same_string(text: str) -> None:
    assert scalar(text) != text
    assert yaml.safe_load(f"k: {scalar(text)}") == {"k": text}
    assert yaml.safe_load(f"k: {{a: {scalar(text)}}}") == {"k": {"a": text}}


# -- keys -------------------------------------------------------------------------------------------------------------


def test_keys_chosen_like_the_validator_accepts(tmp_path: Path) -> None:
    facts = [
        table("tenants", [("id", "uuid"), ("name", "text")], pk=("id",)),
        table(
            "content_items",
            [("id", "int8"), ("neo4j_node_id", "uuid", True), ("tenant_id", "uuid", True)],
            pk=("id",),
            unique=(("neo4j_node_id",),),
            fks=((("tenant_id",), "tenants", ("id",)),),
        ),
        table("devices", [("serial", "text", True), ("note", "text")], unique=(("serial",),)),
        table("tariffs", [("rate", "numeric"), ("label", "text")], pk=("rate",)),
        table("grids", [("cells", "_int4"), ("label", "text")], pk=("cells",)),
        table("fees", [("amount", "money")], pk=("amount",)),
        table("fees_with_code", [("amount", "money"), ("code", "text", True)], pk=("amount",), unique=(("code",),)),
        table("labels", [("label", "text"), ("color", "text")], unique=(("label",),)),
        table("audit_log", [("at", "timestamptz"), ("message", "text")]),
    ]
    result = suggest(facts)
    nodes, _ = entries(result)
    assert "key" not in nodes["tenants"]
    assert nodes["content_items"]["key"] == "neo4j_node_id"
    assert nodes["content_items"]["key_property"] == "id"
    assert nodes["content_items"]["properties"] == {"rename": {"id": "pg_id"}}
    assert nodes["devices"]["key"] == "serial"
    assert nodes["tariffs"]["properties"] == {"types": {"rate": "string"}}
    assert nodes["grids"]["properties"] == {"types": {"cells": "string"}}
    assert nodes["fees_with_code"]["key"] == "code"  # money cannot stay exact; the unique text column can
    assert set(nodes) == {"tenants", "content_items", "devices", "tariffs", "grids", "fees_with_code"}
    reasons = {s.table: s.reason for s in result.skipped}
    assert reasons["public.fees"].startswith("no key can be a node key: key column `amount` is `money`")
    assert reasons["public.labels"] == "no key can be a node key: column label of key (label) may be NULL"
    assert reasons["public.audit_log"].startswith("no primary key and no unique key")
    text = result.yaml()
    assert "#   public.audit_log: no primary key and no unique key" in text
    assert "kept exact as text (`types: string`)" in text
    mapping = validate(result, facts, tmp_path)
    assert {n.name: n.key_columns for n in mapping.nodes}["content_items"] == ("neo4j_node_id",)


def test_invalid_column_names_are_renamed(tmp_path: Path) -> None:
    facts = [
        table(
            "devices",
            [
                ("Serial No", "text"),
                ("Display Name", "text"),
                ("display_name", "text"),
                ("_pg2neo_x", "int4"),
                ("yes", "bool"),
            ],
            pk=("Serial No",),
        ),
    ]
    result = suggest(facts)
    nodes, _ = entries(result)
    assert nodes["devices"]["key_property"] == "Serial_No"
    assert nodes["devices"]["properties"]["rename"] == {"Display Name": "Display_Name", "_pg2neo_x": "pg2neo_x"}
    validate(result, facts, tmp_path)


def test_renamed_names_never_clash(tmp_path: Path) -> None:
    facts = [table("t", [("id", "int4"), ("a b", "text"), ("a_b", "text"), ("a-b", "text")], pk=("id",))]
    result = suggest(facts)
    nodes, _ = entries(result)
    assert nodes["t"]["properties"]["rename"] == {"a b": "pg_a_b", "a-b": "pg_a_b_2"}
    validate(result, facts, tmp_path)


def test_version_and_updated_at_columns_need_their_types() -> None:
    facts = [
        table("a", [("id", "int4"), ("version", "int4"), ("updated_at", "timestamptz")], pk=("id",)),
        table("b", [("id", "int4"), ("version", "text"), ("updated_at", "date")], pk=("id",)),
    ]
    nodes, _ = entries(suggest(facts))
    assert nodes["a"]["version_column"] == "version" and nodes["a"]["updated_at_column"] == "updated_at"
    assert "version_column" not in nodes["b"] and "updated_at_column" not in nodes["b"]


# -- foreign keys -----------------------------------------------------------------------------------------------------


def test_foreign_keys_point_from_the_row_to_what_it_references(tmp_path: Path) -> None:
    facts = [
        USERS,
        THREADS,
        table(
            "messages",
            [
                ("id", "int8"),
                ("thread_id", "int8", True),
                ("author_id", "uuid"),
                ("reviewer_id", "uuid"),
                ("thr_id", "int8"),
            ],
            pk=("id",),
            fks=(
                (("thread_id",), "threads", ("id",)),
                (("author_id",), "users", ("id",)),
                (("reviewer_id",), "users", ("id",)),
                (("thr_id",), "threads", ("id",)),
            ),
        ),
    ]
    result = suggest(facts)
    nodes, _ = entries(result)
    rels = nodes["messages"]["relationships"]
    assert rels == [
        {"type": "IN_THREAD", "columns": "thread_id", "to": "threads"},
        {"type": "AUTHOR", "columns": "author_id", "to": "users"},
        {"type": "REVIEWER", "columns": "reviewer_id", "to": "users"},
        {"type": "THR", "columns": "thr_id", "to": "threads"},  # IN_THREAD is taken on this table
    ]
    text = result.yaml()
    assert "# (:Message)-[:IN_THREAD]->(:Thread) by thread_id; to draw it the other way: direction: in, type: " in text
    assert "type: HAS_MESSAGE" in text
    mapping = validate(result, facts, tmp_path)
    messages = next(n for n in mapping.nodes if n.name == "messages")
    assert {r.direction for r in messages.fk_rels} == {"out"}


def test_composite_foreign_keys_to_one_table_get_distinct_types(tmp_path: Path) -> None:
    facts = [
        table("warehouses", [("region", "text"), ("num", "int4")], pk=("region", "num")),
        table(
            "moves",
            [("id", "int4"), ("a", "text"), ("b", "int4"), ("c", "text"), ("d", "int4")],
            pk=("id",),
            fks=((("a", "b"), "warehouses", ("region", "num")), (("c", "d"), "warehouses", ("region", "num"))),
        ),
    ]
    result = suggest(facts)
    nodes, _ = entries(result)
    assert [r["type"] for r in nodes["moves"]["relationships"]] == ["IN_WAREHOUSE", "IN_WAREHOUSE_2"]
    validate(result, facts, tmp_path)


def test_self_references(tmp_path: Path) -> None:
    facts = [
        table(
            "people",
            [("id", "int4"), ("manager_id", "int4"), ("mentor_id", "int4")],
            pk=("id",),
            fks=((("manager_id",), "people", ("id",)), (("mentor_id",), "people", ("id",))),
        ),
        table(
            "categories",
            [("id", "int4"), ("category_id", "int4")],
            pk=("id",),
            fks=((("category_id",), "categories", ("id",)),),
        ),
    ]
    result = suggest(facts)
    nodes, joins = entries(result)
    assert [r["type"] for r in nodes["people"]["relationships"]] == ["MANAGER", "MENTOR"]
    assert nodes["categories"]["relationships"] == [
        {"type": "IN_CATEGORY", "columns": "category_id", "to": "categories"}
    ]
    assert not joins
    validate(result, facts, tmp_path)


def test_foreign_keys_to_tables_left_out_are_comments(tmp_path: Path) -> None:
    facts = [
        table("logs", [("msg", "text")]),
        table(
            "events",
            [("id", "int4"), ("user_id", "uuid"), ("account_id", "int4")],
            pk=("id",),
            fks=((("user_id",), "users", ("id",)), (("account_id",), "crm.accounts", ("id",))),
        ),
        USERS,
    ]
    result = suggest(facts, SuggestOptions(exclude=("users",)))
    nodes, _ = entries(result)
    assert "relationships" not in nodes["events"]
    text = result.yaml()
    assert "# not drawn: (user_id) -> public.users, which is not a node: left out by --exclude" in text
    assert "# not drawn: (account_id) -> crm.accounts, which is not a node: it is not in the chosen schemas" in text
    validate(result, facts, tmp_path)


# -- join tables ------------------------------------------------------------------------------------------------------


def test_join_table_shapes(tmp_path: Path) -> None:
    facts = [
        USERS,
        THREADS,
        table("groups", [("id", "int4"), ("name", "text")], pk=("id",)),
        table(
            "thread_users",
            [("thread_id", "int8"), ("user_id", "uuid"), ("score", "float8")],
            pk=("thread_id", "user_id"),
            fks=((("user_id",), "users", ("id",)), (("thread_id",), "threads", ("id",))),
        ),
        table(
            "memberships",
            [("id", "int8"), ("user_id", "uuid", True), ("group_id", "int4", True), ("role", "text")],
            pk=("id",),
            unique=(("group_id", "user_id"),),
            fks=((("user_id",), "users", ("id",)), (("group_id",), "groups", ("id",))),
        ),
        table(
            "orders",
            [("id", "int8"), ("user_id", "uuid", True), ("group_id", "int4", True)],
            pk=("id",),
            fks=((("user_id",), "users", ("id",)), (("group_id",), "groups", ("id",))),
        ),
        table(
            "optional_links",
            [("id", "int8"), ("user_id", "uuid"), ("group_id", "int4", True)],
            pk=("id",),
            unique=(("user_id", "group_id"),),
            fks=((("user_id",), "users", ("id",)), (("group_id",), "groups", ("id",))),
        ),
        table(
            "enrollments",
            [("user_id", "uuid"), ("group_id", "int4")],
            pk=("user_id", "group_id"),
            fks=((("user_id",), "users", ("id",)), (("group_id",), "groups", ("id",))),
        ),
        table(
            "enrollment_notes",
            [("id", "int4"), ("user_id", "uuid", True), ("group_id", "int4", True)],
            pk=("id",),
            fks=((("user_id", "group_id"), "enrollments", ("user_id", "group_id")),),
        ),
        table(
            "friendships",
            [("user_id", "uuid"), ("friend_id", "uuid")],
            pk=("user_id", "friend_id"),
            fks=((("user_id",), "users", ("id",)), (("friend_id",), "users", ("id",))),
        ),
        table(
            "group_tags",
            [("group_id", "int4"), ("tag", "text")],
            pk=("group_id", "tag"),
            fks=((("group_id",), "groups", ("id",)),),
        ),
    ]
    result = suggest(facts)
    nodes, joins = entries(result)
    assert set(joins) == {"thread_users", "memberships", "friendships"}
    assert joins["thread_users"] == {
        "table": "thread_users",
        "type": "HAS_USER",
        "from": {"table": "threads", "columns": "thread_id"},  # first in the primary key
        "to": {"table": "users", "columns": "user_id"},
    }
    assert joins["memberships"]["type"] == "MEMBERSHIP"
    assert joins["friendships"]["from"]["columns"] == "user_id"
    assert {"orders", "optional_links", "enrollments", "enrollment_notes", "group_tags"} <= set(nodes)
    text = result.yaml()
    assert "public.thread_users: its primary key is two foreign keys, so each row is a relationship" in text
    assert "with properties score" in text
    assert "a surrogate key (id) and two NOT NULL foreign keys unique together" in text
    assert "(group_id, user_id) are not unique together: kept as a node" in text
    assert "shaped like a join table, but referenced by public.enrollment_notes, so it is a node" in text
    mapping = validate(result, facts, tmp_path)
    assert {j.name: j.type for j in mapping.joins} == {
        "thread_users": "HAS_USER",
        "memberships": "MEMBERSHIP",
        "friendships": "FRIENDSHIP",
    }


def test_third_foreign_key_of_a_join_table_stays_a_property(tmp_path: Path) -> None:
    facts = [
        USERS,
        table("projects", [("id", "int4")], pk=("id",)),
        table("roles", [("id", "int4")], pk=("id",)),
        table(
            "assignments",
            [("user_id", "uuid"), ("project_id", "int4"), ("role_id", "int4")],
            pk=("user_id", "project_id"),
            fks=(
                (("user_id",), "users", ("id",)),
                (("project_id",), "projects", ("id",)),
                (("role_id",), "roles", ("id",)),
            ),
        ),
    ]
    result = suggest(facts)
    _, joins = entries(result)
    assert joins["assignments"]["type"] == "ASSIGNMENT"
    assert "the foreign key (role_id) -> public.roles stays a property" in result.yaml()
    mapping = validate(result, facts, tmp_path)
    assert [c.prop for c in mapping.joins[0].columns if c.prop in mapping.joins[0].props] == ["role_id"]


def test_a_join_needs_both_ends_as_nodes(tmp_path: Path) -> None:
    facts = [
        USERS,
        table("logs", [("id", "int4")], pk=()),
        table(
            "user_logs",
            [("user_id", "uuid"), ("log_id", "int4")],
            pk=("user_id", "log_id"),
            fks=((("user_id",), "users", ("id",)), (("log_id",), "logs", ("id",))),
        ),
    ]
    result = suggest(facts)
    nodes, joins = entries(result)
    assert not joins
    assert nodes["user_logs"]["relationships"] == [{"type": "IN_USER", "columns": "user_id", "to": "users"}]
    validate(result, facts, tmp_path)


def test_join_types_never_reuse_a_foreign_key_type(tmp_path: Path) -> None:
    facts = [
        table("people", [("id", "int4")], pk=("id",)),
        table("books", [("id", "int4")], pk=("id",)),
        table(
            "reviews",
            [("id", "int4"), ("author_id", "int4")],
            pk=("id",),
            fks=((("author_id",), "people", ("id",)),),
        ),
        table(
            "authors",
            [("person_id", "int4"), ("book_id", "int4")],
            pk=("person_id", "book_id"),
            fks=((("person_id",), "people", ("id",)), (("book_id",), "books", ("id",))),
        ),
        table(
            "co_authors",
            [("person_id", "int4"), ("book_id", "int4")],
            pk=("person_id", "book_id"),
            fks=((("person_id",), "people", ("id",)), (("book_id",), "books", ("id",))),
        ),
    ]
    result = suggest(facts)
    _, joins = entries(result)
    assert joins["authors"]["type"] == "AUTHOR_2"
    assert joins["co_authors"]["type"] == "CO_AUTHOR"
    validate(result, facts, tmp_path)


# -- choosing tables, labels, schemas ---------------------------------------------------------------------------------


def test_tables_and_exclude_globs() -> None:
    facts = [
        table("orders", [("id", "int4")], pk=("id",)),
        table("order_lines", [("id", "int4")], pk=("id",)),
        table("audit_log", [("id", "int4")], pk=("id",)),
        table("accounts", [("id", "int4")], pk=("id",), schema="crm"),
        table("places", [("id", "int4")], pk=("id",), schema="crm"),
        table("people", [("id", "int4")], pk=("id",)),
    ]
    options = SuggestOptions(
        schemas=("public", "crm"), tables=("order*", "crm.*", "[o-p]*"), exclude=("*lines", "crm.p*")
    )
    result = suggest(facts, options)
    # `[o-p]*` is matched against the name (not `public.…`), `crm.p*` against the qualified name.
    assert [n.table.qualified for n in result.nodes] == ["public.orders", "crm.accounts", "public.people"]
    assert {s.table: s.reason for s in result.skipped} == {
        "public.order_lines": "left out by --exclude",
        "public.audit_log": "not chosen by --tables",
        "crm.places": "left out by --exclude",
    }
    assert "#   public.order_lines, crm.places: left out by --exclude\n" in result.yaml()


def test_tables_that_are_not_user_data_are_left_out() -> None:
    facts = [
        table("spatial_ref_sys", [("srid", "int4")], pk=("srid",), extension="postgis"),
        table("events_2024", [("id", "int4")], pk=("id",), partition_of="public.events"),
        table("events", [("id", "int4")], pk=("id",)),
        table("a.b", [("id", "int4")], pk=("id",)),
        table("changes", [("id", "int8")], pk=("id",), schema="pg2neo"),
    ]
    result = suggest(facts, SuggestOptions(schemas=("public", "pg2neo")))
    assert [n.table.name for n in result.nodes] == ["events"]
    reasons = {s.table: s.reason for s in result.skipped}
    assert reasons["public.spatial_ref_sys"] == "a table of the extension `postgis`, not your data"
    assert reasons["public.events_2024"].startswith("a partition of public.events")
    assert "contains a dot" in reasons["public.a.b"]
    assert reasons["pg2neo.changes"] == "pg2neo's own bookkeeping"


def test_labels_stay_unique(tmp_path: Path) -> None:
    facts = [
        table("people", [("id", "int4")], pk=("id",)),
        table("person", [("id", "int4")], pk=("id",)),
        table("notes", [("id", "int4")], pk=("id",)),
        table("notes", [("id", "int4")], pk=("id",), schema="crm"),
        table("note", [("id", "int4")], pk=("id",), schema="crm"),
    ]
    result = suggest(facts, SuggestOptions(schemas=("public", "crm")))
    assert {n.table.qualified: n.label for n in result.nodes} == {
        "public.people": "Person",
        "public.person": "PublicPerson",
        "public.notes": "Note",
        "crm.notes": "Notes",
        "crm.note": "CrmNote",
    }
    assert "label Person is already public.people's (one label, one table): this one is PublicPerson" in result.yaml()
    validate(result, facts, tmp_path)


def test_other_schemas_are_written_qualified(tmp_path: Path) -> None:
    facts = [
        table(
            "contacts",
            [("id", "int4"), ("account_id", "int4")],
            pk=("id",),
            fks=((("account_id",), "crm.accounts", ("id",)),),
        ),
        table("accounts", [("id", "int4")], pk=("id",), schema="crm"),
        table(
            "account_contacts",
            [("account_id", "int4"), ("contact_id", "int4")],
            pk=("account_id", "contact_id"),
            fks=((("account_id",), "crm.accounts", ("id",)), (("contact_id",), "public.contacts", ("id",))),
            schema="crm",
        ),
    ]
    result = suggest(facts, SuggestOptions(schemas=("public", "crm")))
    nodes, joins = entries(result)
    assert nodes["contacts"]["relationships"] == [{"type": "IN_ACCOUNT", "columns": "account_id", "to": "crm.accounts"}]
    assert joins["crm.account_contacts"]["from"]["table"] == "crm.accounts"
    assert joins["crm.account_contacts"]["to"]["table"] == "public.contacts"
    validate(result, facts, tmp_path)


def test_the_file_explains_itself() -> None:
    text = suggest([USERS], SuggestOptions()).yaml()
    assert text.startswith("# A mapping suggested by `pg2neo mapping suggest` from the catalog of schema(s) public.")
    assert "# public.users -> (:User), keyed by its primary key (id)\n  - table: users\n    label: User\n" in text
    assert yaml.safe_load(text)["nodes"] == [{"table": "users", "label": "User"}]


# -- any catalog: the suggestion passes the validator -----------------------------------------------------------------

NAMES = st.sampled_from(["users", "people", "items", "orders", "tags", "threads", "statuses", "notes", "a b", "yes"])
TYPES = st.sampled_from(["int4", "int8", "text", "uuid", "numeric", "money", "_int4", "bpchar", "float8"])


@st.composite
def catalogs(draw: st.DrawFn) -> list[TableFacts]:
    names = draw(st.lists(NAMES, min_size=1, max_size=6, unique=True))
    facts: list[TableFacts] = []
    for name in names:
        count = draw(st.integers(1, 4))
        columns: list[Col] = [(f"c{i}", draw(TYPES), draw(st.booleans())) for i in range(count)]
        pk_size = draw(st.integers(0, min(2, count)))
        pk = tuple(c[0] for c in columns[:pk_size])
        columns = [(c[0], c[1], True) if c[0] in pk else c for c in columns]
        unique = (tuple(c[0] for c in columns[-1:]),) if draw(st.booleans()) else ()
        fks = []
        for i in range(draw(st.integers(0, 3))):
            target = draw(st.sampled_from(names))
            col = f"{draw(st.sampled_from(['owner', target, 'parent', 'x']))}_{i}_id"
            columns.append((col, "int4", draw(st.booleans())))
            fks.append(((col,), target, ("c0",)))
        facts.append(table(name, columns, pk=pk, unique=unique, fks=tuple(fks)))
    # A foreign key must reference a unique key: keep only those whose target's c0 is one.
    keyed = {f.table.qualified for f in facts if ("c0",) in f.table.unique_keys}
    fixed = []
    for f in facts:
        t = f.table
        good = tuple(fk for fk in t.foreign_keys if fk.ref_table in keyed)
        fixed.append(TableFacts(CatalogTable(t.schema, t.name, t.columns, t.primary_key, t.unique_keys, good)))
    return fixed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(catalogs())
def test_any_catalog_gives_a_mapping_the_validator_accepts(tmp_path: Path, facts: list[TableFacts]) -> None:
    result = suggest(facts)
    if not result.nodes:
        assert all(s.reason for s in result.skipped)
        return
    validate(result, facts, tmp_path)
    mapped = {n.table.qualified for n in result.nodes} | {j.table.qualified for j in result.joins}
    assert mapped | {s.table for s in result.skipped} == {f.table.qualified for f in facts}
    assert len(load_file(tmp_path / "suggested.yaml")[0].nodes) == len(result.nodes)
