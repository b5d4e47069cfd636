"""The embedded local stack: PostgreSQL 15 from Debian's packages and Neo4j 5.26 with APOC from Maven Central, as
processes pg2neo creates, starts and stops itself (used by `pg2neo dev`, the demo, the tests and the benchmarks)."""

from __future__ import annotations

from pg2neo.devstack.stack import LocalStack, StackInfo

__all__ = ["LocalStack", "StackInfo"]
