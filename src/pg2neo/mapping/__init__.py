"""Mapping: the YAML file (`model`, pydantic with line numbers) checked against a catalog snapshot (`catalog` reads
it, `resolve` checks purely) into the frozen plan (`plan.Mapping`); value conversion (`convert`), content hashes
(`hashing`), and a suggested mapping for an unknown schema (`suggest`)."""

from __future__ import annotations

from pg2neo.mapping.catalog import Catalog, read_catalog
from pg2neo.mapping.model import MappingFile, load_file
from pg2neo.mapping.plan import Column, ForeignKeyRel, JoinTable, Mapping, NodeTable, ValueKind
from pg2neo.mapping.resolve import load_mapping

__all__ = [
    "Catalog",
    "Column",
    "ForeignKeyRel",
    "JoinTable",
    "Mapping",
    "MappingFile",
    "NodeTable",
    "ValueKind",
    "load_file",
    "load_mapping",
    "read_catalog",
]
