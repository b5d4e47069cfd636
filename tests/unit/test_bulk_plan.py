"""The bulk load's plan (runtime/bulk.py): the `neo4j-admin` arguments for the exported files, the CSV headers,
and the mappings it refuses because the import cannot reproduce the writer's MERGE."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from plan_builder import col, fk, plan, table

from pg2neo.errors import Pg2NeoError
from pg2neo.runtime.bulk import BulkExport, import_arguments, refuse_unsupported
from pg2neo.runtime.bulk_csv import join_header, node_header
from pg2neo.runtime.bulk_export import PartResult

TENANTS = table("tenants", [col("id"), col("name", "text"), col("at", "timestamptz", not_null=False)])
PROJECTS = table(
    "projects",
    [col("id"), col("tenant_id", not_null=False), col("owner_id", not_null=False)],
    fks=(fk(("tenant_id",), "tenants"), fk(("owner_id",), "tenants")),
)
MEMBERS = table(
    "members",
    [col("tenant_id"), col("project_id"), col("role", "text", not_null=False)],
    key=("tenant_id", "project_id"),
    fks=(fk(("tenant_id",), "tenants"), fk(("project_id",), "projects")),
)
MAPPING = """
    version: 1
    nodes:
      - table: tenants
        labels: [Tenant, Org]
      - table: projects
        label: Project
        relationships:
          - {type: OWNS, columns: tenant_id, to: tenants, direction: in}
          - {type: OWNED_BY, columns: owner_id, to: tenants}
    relationships:
      - table: members
        type: MEMBER
        from: {table: tenants, columns: tenant_id}
        to: {table: projects, columns: project_id}
"""


def test_arguments_name_the_database_first_and_every_file_group(tmp_path: Path) -> None:
    mapping = plan(tmp_path, MAPPING, TENANTS, PROJECTS, MEMBERS)
    done = BulkExport(tmp_path, 7, "1:1:", dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    done.parts = [
        PartResult("public.tenants", 0, files={"nodes": "n0"}, multiline=["n0"]),
        PartResult("public.tenants", 1, files={"nodes": "n1", "stubs": "s1"}),
        PartResult("public.projects", 0, files={"nodes": "p0", "link1": "l0"}),
        PartResult("public.members", 0, files={"rels": "r0"}),
    ]
    args = import_arguments(mapping, done, "neo4j")
    assert args[:4] == ["database", "import", "full", "neo4j"]  # every file option takes what follows as files
    assert "--multiline-fields=true" in args  # a file with a line break in a field: the v1 parser for all
    groups = [a for a in args if a.startswith(("--nodes", "--relationships"))]
    assert groups == [
        f"--nodes=Tenant:Org={tmp_path}/header-nodes-0.csv,n0,n1",
        f"--nodes=Tenant={tmp_path}/header-stubs-0.csv,s1",
        f"--nodes=Project={tmp_path}/header-nodes-1.csv,p0",
        f"--relationships=OWNED_BY={tmp_path}/header-link1-1.csv,l0",
        f"--relationships=MEMBER={tmp_path}/header-rels-2.csv,r0",
    ]


def test_headers_carry_the_stamps_and_types(tmp_path: Path) -> None:
    mapping = plan(tmp_path, MAPPING, TENANTS, PROJECTS, MEMBERS)
    assert node_header(mapping.nodes[0]) == (
        ":ID(public__tenants),id:long,name:string,at:datetime,_pg2neo_hash:string,_pg2neo_version:long,"
        "_pg2neo_synced_at:datetime\n"
    )
    assert join_header(mapping.joins[0]).startswith(":START_ID(public__tenants),:END_ID(public__projects),role:string")


def test_a_type_drawn_twice_is_refused(tmp_path: Path) -> None:
    refuse_unsupported(plan(tmp_path, MAPPING, TENANTS, PROJECTS, MEMBERS))
    twice = MAPPING.replace("type: OWNED_BY", "type: OWNS")
    with pytest.raises(Pg2NeoError, match="`OWNS` is drawn by both"):
        refuse_unsupported(plan(tmp_path, twice, TENANTS, PROJECTS, MEMBERS))
