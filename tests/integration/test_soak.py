"""Longer fault runs for `make soak`: a two-minute Neo4j outage and a hundred SIGKILLs of `pg2neo run`, both under
continuous write load, each ending with the exact graph comparison.

Place in the data flow: end to end, like test_faults.py, whose helpers these reuse.
"""

from __future__ import annotations

import pytest
from test_faults import Synced, neo4j_outage, sigkill_rounds, synced

from pg2neo.devstack.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.soak]

__all__ = ["synced"]  # the fixture, imported so that pytest finds it here


def test_neo4j_stopped_two_minutes_under_load(synced: Synced, owned_stack: LocalStack) -> None:
    neo4j_outage(synced, owned_stack, 120.0)


def test_a_hundred_sigkills_under_load(synced: Synced) -> None:
    kills = sigkill_rounds(synced, 99)
    assert kills == {"random_point": 66, "after_neo4j_commit": 33}
