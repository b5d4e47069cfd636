"""The pure parts of verify and repair: bucket digests, drill-down comparison, policy decisions (no servers)."""

from __future__ import annotations

import datetime as dt
import random
import sys
from pathlib import Path
from typing import Any

import pytest
from neo4j.time import DateTime

from pg2neo.errors import ReconcileError
from pg2neo.mapping.plan import Column, SelectAs, ValueKind
from pg2neo.mapping.plan import NodeTable as Node
from pg2neo.reconcile.policies import Conflict, decider_for, last_write_wins
from pg2neo.reconcile.verify import Buckets, Drift, Scope, _collect, bucket_count, compare_maps

TENANTS = Node(
    table="public.tenants",
    schema="public",
    name="tenants",
    labels=("Tenant",),
    key_columns=("id",),
    key_props=("id",),
    key_types=("uuid",),
    columns=(
        Column("id", "id", "uuid", ValueKind.UUID, SelectAs.RAW),
        Column("name", "name", "text", ValueKind.TEXT, SelectAs.RAW),
        Column("updated_at", "updated_at", "timestamptz", ValueKind.TIMESTAMPTZ, SelectAs.RAW),
    ),
    updated_at_column="updated_at",
)
SCOPE = Scope(":Tenant", "node", TENANTS)


def items(n: int) -> dict[tuple[str, ...], int]:
    rng = random.Random(n)
    return {(f"k{i}",): rng.getrandbits(64) for i in range(n)}


def buckets_of(found: dict[tuple[str, ...], int], size: int) -> Buckets:
    b = Buckets(size)
    for ident, h in found.items():
        b.add(ident, h)
    return b


def test_equal_sets_have_no_differing_bucket_whatever_the_order() -> None:
    pg = items(5000)
    neo = dict(reversed(list(pg.items())))
    assert buckets_of(pg, 512).differing(buckets_of(neo, 512)) == set()


def test_each_kind_of_difference_lands_in_a_differing_bucket_and_is_classified() -> None:
    pg = items(5000)
    neo = dict(pg)
    del neo[("k1",)]  # missing in Neo4j
    neo[("ghost",)] = 1  # extra in Neo4j
    neo[("k2",)] ^= 1  # mismatch
    size = 512
    wanted = buckets_of(pg, size).differing(buckets_of(neo, size))
    assert 1 <= len(wanted) <= 3
    found = compare_maps(
        _collect(iter(pg.items()), wanted, size),
        _collect(iter(neo.items()), wanted, size),
    )
    assert found == {"missing": [("k1",)], "extra": [("ghost",)], "mismatch": [("k2",)]}


def test_a_duplicate_in_the_graph_is_extra() -> None:
    stream = [(("a",), 1), (("a",), 1)]
    size = 64
    wanted = set(range(size))
    found = compare_maps({("a",): 1}, _collect(iter(stream), wanted, size))
    assert found["extra"] == [("a", "#2")]
    assert not found["missing"] and not found["mismatch"]


def test_bucket_count_grows_with_rows_within_bounds() -> None:
    assert bucket_count(0) == 64
    assert bucket_count(1_000_000) >= 1_000_000 // 32
    assert bucket_count(10**12) == 1 << 18


def conflict(pg_at: Any, neo_at: Any, pg: bool = True, neo: bool = True) -> Conflict:
    return Conflict(
        Drift(":Tenant", "mismatch", ("t1",)),
        SCOPE,
        {"id": "t1", "updated_at": pg_at} if pg else None,
        {"id": "t1", "updated_at": neo_at} if neo else None,
    )


def test_last_write_wins_picks_the_newer_side() -> None:
    older = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    newer = older + dt.timedelta(seconds=1)
    assert last_write_wins(conflict(older, DateTime.from_native(newer))) == "neo4j"
    assert last_write_wins(conflict(newer, DateTime.from_native(older))) == "pg"
    assert last_write_wins(conflict(newer, None)) == "pg"  # the graph has no timestamp: PostgreSQL is the source
    assert last_write_wins(conflict(None, None, pg=False)) == "pg"  # a deleted row wins


def test_policies_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = conflict(None, None)
    pg_wins, neo_wins = decider_for("pg-wins"), decider_for("neo4j-wins")
    assert pg_wins is not None and pg_wins(c) == "pg"
    assert neo_wins is not None and neo_wins(c) == "neo4j"
    assert decider_for("manual") is None
    (tmp_path / "policy_for_unit_test.py").write_text(
        "def always_graph(pg_row, neo4j_props, context):\n    return 'neo4j'\n"
        "def wrong(pg_row, neo4j_props, context):\n    return 'both'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    custom = decider_for("custom:policy_for_unit_test:always_graph")
    assert custom is not None and custom(c) == "neo4j"
    wrong = decider_for("custom:policy_for_unit_test:wrong")
    assert wrong is not None
    with pytest.raises(ReconcileError, match="returned 'both'"):
        wrong(c)
    with pytest.raises(ReconcileError):
        decider_for("custom:no_such_module_here:fn")
    with pytest.raises(ReconcileError, match="unknown policy"):
        decider_for("newest")
    sys.modules.pop("policy_for_unit_test", None)
