"""Unit tests of the mapping file loader (mapping/model.py): shape errors are reported with file:line (no servers).

Place in the data flow: the very start. The YAML file is parsed and shape-checked here; checks against the live
catalog (unknown tables or columns, keys, foreign keys) are integration tests (test_sync_second_schema.py).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pg2neo.errors import MappingError
from pg2neo.mapping.model import LineIndex, MappingFile, load_file


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pg2neo.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(MappingError) as exc:
        load_file(path)
    return str(exc.value)


def test_valid_file_loads_with_defaults_and_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - table: content_items
            label: ContentItem
            key: neo4j_node_id
            key_property: id
            properties:
              rename: {id: pg_id}
              types: {tags: json}
            relationships:
              - {type: HAS_CONTENT, columns: project_id, to: projects, direction: in}
        relationships:
          - table: thread_content
            type: INCLUDES
            from: {table: threads, columns: thread_id}
            to: {table: content_items, columns: [content_item_id]}
        """,
    )
    spec, index = load_file(path)
    assert isinstance(spec, MappingFile)
    assert spec.version == 1 and spec.schema_ == "public"
    node = spec.nodes[0]
    assert node.key == ["neo4j_node_id"] and node.key_property == ["id"]  # a single name becomes a list
    assert node.properties.include == "all" and node.properties.rename == {"id": "pg_id"}
    assert node.properties.types == {"tags": "json"}
    assert node.relationships[0].columns == ["project_id"] and node.relationships[0].direction == "in"
    rel = spec.relationships[0]
    assert rel.from_.columns == ["thread_id"] and rel.to.columns == ["content_item_id"]
    assert index.line(("nodes", 0, "table")) == 2
    assert index.line(("nodes", 0, "relationships", 0, "to")) == 10
    assert index.line(("relationships", 0, "from")) == 14
    assert index.where(("relationships", 0, "type")) == f"{path}:13"


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - table: tenants
            label: [Tenant
          - table: users
        """,
    )
    message = error_of(path)
    assert message.startswith(f"{path}:")
    line = int(message.split(":", 2)[1])
    assert line in (3, 4, 5)
    assert "not valid YAML" in message


def test_tab_indentation_is_a_yaml_error(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("nodes:\n  - table: t\n\tlabel: T\n", encoding="utf-8")
    message = error_of(path)
    assert message.startswith(f"{path}:3: not valid YAML")


def test_unknown_key_names_file_line_and_fix(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - table: tenants
            label: Tenant
          - table: users
            lable: User
        """,
    )
    message = error_of(path)
    assert f"{path}:5: nodes.1.lable: unknown key; remove it or check its spelling against docs/mapping.md" in message


def test_unknown_nested_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - table: users
            properties:
              exclude: [email]
              rename_to: {a: b}
        """,
    )
    assert f"{path}:5: nodes.0.properties.rename_to: unknown key" in error_of(path)


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        version: 2
        nodes:
          - label: NoTable
          - table: users
            relationships:
              - {type: MEMBER_OF, columns: tenant_id, to: tenants, direction: sideways}
        relationships:
          - table: thread_content
            type: INCLUDES
            from: {table: threads, columns: thread_id}
        """,
    )
    message = error_of(path)
    assert message.startswith("the mapping file has errors:")
    assert f"{path}:1: version:" in message
    assert f"{path}:3: nodes.0.table: required key is missing" in message
    assert f"{path}:6: nodes.1.relationships.0.direction:" in message and "'out' or 'in'" in message
    assert f"{path}:8: relationships.0.to: required key is missing" in message


def test_wrong_property_type_names_the_choices(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - table: users
            properties:
              types: {email: blob}
        """,
    )
    message = error_of(path)
    assert f"{path}:4: nodes.0.properties.types.email:" in message
    for choice in ("native", "string", "float", "json"):
        assert choice in message


def test_include_must_be_all_or_a_list(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - table: users
            properties:
              include: some
        """,
    )
    assert f"{path}:4: nodes.0.properties.include" in error_of(path)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just text\n"])
def test_document_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    assert error_of(path) == f"{path}:1: the mapping must be a YAML mapping with `nodes:` and `relationships:`"


def test_missing_file_says_how_to_pass_one(tmp_path: Path) -> None:
    message = error_of(tmp_path / "absent.yaml")
    assert "cannot read the mapping file" in message and "--mapping" in message and "PG2NEO_MAPPING" in message


def test_line_index_falls_back_to_the_nearest_parent(tmp_path: Path) -> None:
    path = write(tmp_path, "nodes:\n  - table: t\n    label: T\n")
    _, index = load_file(path)
    assert index.line(("nodes", 0, "properties", "rename", "x")) == 2  # absent keys -> the entry's line
    assert isinstance(index, LineIndex) and index.line(("nope",)) == 1


def test_label_next_to_labels_is_an_error_at_the_labels_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - table: warehouses
            label: Warehouse
            labels: [Site, Depot]
        """,
    )
    message = error_of(path)
    assert f"{path}:4: nodes.0.labels: `label` and `labels` are both given, and one would be ignored" in message
    assert "`labels: [A, B]` alone" in message


def test_a_duplicate_key_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - table: users
            label: User
            properties:
              exclude: [email]
              exclude: [password]
            label: Person
        relationships: []
        relationships: []
        """,
    )
    message = error_of(path)
    assert f"{path}:6: nodes.0.properties.exclude: duplicate key (first given on line 5)" in message
    assert f"{path}:7: nodes.0.label: duplicate key (first given on line 3)" in message
    assert f"{path}:9: relationships: duplicate key (first given on line 8)" in message
    assert "remove one or merge them" in message


def test_a_yaml_merge_key_is_not_a_duplicate(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - &base {table: users, label: User}
          - <<: *base
            table: admins
        """,
    )
    spec, _ = load_file(path)
    assert [(n.table, n.label) for n in spec.nodes] == [("users", "User"), ("admins", "User")]


@pytest.mark.parametrize(("key", "line"), [("from_: {table: a, columns: x}", 4), ("schema_: other", 6)])
def test_python_field_names_are_not_accepted_for_documented_keys(tmp_path: Path, key: str, line: int) -> None:
    # `from_` used to be read as `from` (and `schema_` as `schema`), silently losing to it when both were given.
    path = write(
        tmp_path,
        f"""
        relationships:
          - table: j
            type: T
            {key if key.startswith("from_") else "from: {table: a, columns: x}"}
            to: {{table: b, columns: y}}
        {key if key.startswith("schema_") else ""}
        """,
    )
    message = error_of(path)
    assert f"{path}:{line}: " in message and "_: unknown key" in message, message
