"""PostgreSQL roles for tests of the privilege setups: created with unique names (roles are cluster-wide) and dropped
with everything they own or were granted in the test database at the end."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql


@contextmanager
def temporary_roles(admin_dsn: str, *purposes: str) -> Iterator[dict[str, tuple[str, str]]]:
    """LOGIN roles, one per purpose: {purpose: (role name, DSN of admin_dsn's database as that role)}."""
    suffix = uuid.uuid4().hex[:8]
    roles: dict[str, tuple[str, str]] = {}
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        for purpose in purposes:
            name, password = f"t_{purpose}_{suffix}", secrets.token_hex(12)
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password))
            )
            roles[purpose] = (name, psycopg.conninfo.make_conninfo(admin_dsn, user=name, password=password))
    try:
        yield roles
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            for name, _ in roles.values():
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE usename = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
                admin.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
