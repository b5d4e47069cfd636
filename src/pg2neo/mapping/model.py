"""The mapping file (YAML): its pydantic model and a loader that remembers the line of every entry.

Only this module and `resolve` see the file's shape; the rest of pg2neo works on the resolved plan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pg2neo.errors import MappingError

ColumnType = Literal["native", "string", "float", "json"]
Direction = Literal["out", "in"]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class _Strict(BaseModel):
    # Only the spelling the file format documents is accepted: with populate_by_name, `from_:` or `schema_:` would
    # be read as `from:` / `schema:` (and silently lose to them when both are given).
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


def _exclusive(data: Any, first: str, second: str, fix: str) -> Any:
    """Refuse two keys of which one would silently win over the other."""
    if isinstance(data, dict) and first in data and second in data:
        raise PydanticCustomError(
            "exclusive_keys",
            "`{first}` and `{second}` are both given, and one would be ignored; {fix}",
            {"first": first, "second": second, "fix": fix, "at": second},
        )
    return data


class PropertiesSpec(_Strict):
    include: Literal["all"] | list[str] = "all"
    exclude: list[str] = Field(default_factory=list)
    rename: dict[str, str] = Field(default_factory=dict)
    types: dict[str, ColumnType] = Field(default_factory=dict)


class ForeignKeyRelSpec(_Strict):
    """A relationship drawn from foreign-key columns of a node table."""

    type: str
    columns: list[str]
    to: str
    direction: Direction = "out"

    _columns = field_validator("columns", mode="before")(_as_list)


class NodeSpec(_Strict):
    table: str
    label: str | None = None
    labels: list[str] = Field(default_factory=list)
    key: list[str] | None = None
    key_property: list[str] | None = None
    properties: PropertiesSpec = PropertiesSpec()
    version_column: str | None = None
    updated_at_column: str | None = None
    relationships: list[ForeignKeyRelSpec] = Field(default_factory=list)

    _key = field_validator("key", "key_property", mode="before")(_as_list)

    @model_validator(mode="before")
    @classmethod
    def _one_label_key(cls, data: Any) -> Any:
        return _exclusive(
            data,
            "label",
            "labels",
            "keep one: `label: A` for one label, or `labels: [A, B]` alone for several (the first is the primary one)",
        )


class EndpointSpec(_Strict):
    table: str
    columns: list[str]

    _columns = field_validator("columns", mode="before")(_as_list)


class JoinRelSpec(_Strict):
    """A relationship per row of a join table; its other columns become relationship properties."""

    table: str
    type: str
    from_: EndpointSpec = Field(alias="from")
    to: EndpointSpec
    key: list[str] | None = None
    properties: PropertiesSpec = PropertiesSpec()

    _key = field_validator("key", mode="before")(_as_list)


class MappingFile(_Strict):
    version: Literal[1] = 1
    schema_: str = Field(default="public", alias="schema")
    nodes: list[NodeSpec] = Field(default_factory=list)
    relationships: list[JoinRelSpec] = Field(default_factory=list)


Path_ = tuple[str | int, ...]


class LineIndex:
    """Maps a path inside the YAML document (`("nodes", 0, "table")`) to its line number (1-based)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[Path_, int] = {}
        # (path of the key, line of its first occurrence, line of the repeat): YAML loaders keep the last value of a
        # repeated key and drop the first without a word, so the file is refused instead.
        self.duplicates: list[tuple[Path_, int, int]] = []

    def record(self, node: yaml.Node, at: Path_ = ()) -> None:
        self.lines[at] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                name = str(key_node.value)
                line = key_node.start_mark.line + 1
                if name in seen and key_node.tag != "tag:yaml.org,2002:merge":
                    self.duplicates.append(((*at, name), seen[name], line))
                    continue
                seen[name] = line
                self.record(value_node, (*at, name))
                self.lines[(*at, name)] = line
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.record(item, (*at, index))

    def line(self, at: Path_) -> int:
        for cut in range(len(at), -1, -1):
            found = self.lines.get(at[:cut])
            if found is not None:
                return found
        return 1

    def where(self, at: Path_) -> str:
        return f"{self.path}:{self.line(at)}"


def load_file(path: Path) -> tuple[MappingFile, LineIndex]:
    """Parse and shape-check the mapping file; every error names the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(
            f"cannot read the mapping file {path}: {exc.strerror}. Pass one with --mapping or PG2NEO_MAPPING."
        ) from exc
    index = LineIndex(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise MappingError(f"{path}:{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if node is not None:
        index.record(node)
    if not isinstance(data, dict):
        raise MappingError(f"{path}:1: the mapping must be a YAML mapping with `nodes:` and `relationships:`")
    problems = [
        f"{path}:{line}: {'.'.join(str(p) for p in at)}: duplicate key (first given on line {first}); YAML keeps only "
        f"the last one, so the first would be silently ignored: remove one or merge them"
        for at, first, line in index.duplicates
    ]
    spec: MappingFile | None = None
    try:
        spec = MappingFile.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            at: Path_ = tuple(error["loc"])
            if error["type"] == "exclusive_keys":
                at = (*at, str(error["ctx"]["at"]))
            problems.append(f"{index.where(at)}: {'.'.join(str(p) for p in at)}: {_hint(error)}")
    if problems or spec is None:
        raise MappingError("the mapping file has errors:\n  " + "\n  ".join(problems))
    return spec, index


def _hint(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key; remove it or check its spelling against docs/mapping.md"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"{error['msg']}"
    return str(error["msg"])
