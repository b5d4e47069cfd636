"""The exit codes of `pg2neo`, each with one meaning (README "Exit codes"), and what an error means for the exit.

Every command's errors reach `failure_for` once, at the CLI boundary: driver and library errors become one line
that says what is wrong and how to fix it, with the code of its kind. Nothing here prints; `pg2neo.cli.app` does,
through `pg2neo.logs.redact`.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from neo4j.exceptions import (
    AuthError,
    ConfigurationError,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
)
from pydantic import ValidationError
from pydantic_settings import SettingsError

from pg2neo.errors import Pg2NeoError, SchemaDriftError
from pg2neo.settings import describe_validation_error

OK = 0
DRIFT = 1  # `verify` / `reconcile` found PostgreSQL and Neo4j different (only that)
ERROR = 2  # configuration, connection, authentication, privileges, bad input or mapping: fix and rerun
NEEDS_OPERATOR = 3  # the service stopped on a condition an operator must settle (schema drift, ...)
INTERNAL = 70  # a bug in pg2neo (EX_SOFTWARE); `--log-level debug` prints the traceback
INTERRUPTED = 130  # Ctrl-C outside the service loop
OUTPUT_CLOSED = 141  # the reader of the output went away (`pg2neo ... | head`): 128 + SIGPIPE, as a shell reports it

DEBUG_HINT = "this is a bug in pg2neo; rerun with --log-level debug for the traceback and report it"


@dataclass(frozen=True)
class Failure:
    message: str
    code: int

    @property
    def internal(self) -> bool:
        return self.code == INTERNAL


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())


def _pg_failure(exc: psycopg.Error) -> Failure:
    primary = exc.diag.message_primary or _one_line(str(exc))
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return Failure(
            f"PostgreSQL refused: {primary}. The role in PG2NEO_PG_DSN lacks a privilege this command needs: run it "
            "as the role that owns the mapped tables (or a superuser), or grant the privilege "
            "(docs/operations.md lists what each role needs)",
            ERROR,
        )
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName) and "pg2neo" in primary:
        return Failure(f"pg2neo is not installed in this database ({primary}): run `pg2neo init`", ERROR)
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return Failure(f"cannot reach PostgreSQL: {_one_line(str(exc))} (check PG2NEO_PG_DSN)", ERROR)
    return Failure(f"PostgreSQL error {type(exc).__name__}: {_one_line(str(exc))}; {DEBUG_HINT}", INTERNAL)


def failure_for(exc: BaseException) -> Failure:
    """The message and exit code for an exception that ended a command (redaction is the printer's job)."""
    if isinstance(exc, KeyboardInterrupt):
        return Failure("interrupted", INTERRUPTED)
    if isinstance(exc, SchemaDriftError):
        return Failure(str(exc).strip(), NEEDS_OPERATOR)
    if isinstance(exc, Pg2NeoError):
        return Failure(str(exc).strip(), ERROR)
    if isinstance(exc, ValidationError):
        return Failure(f"invalid settings: {describe_validation_error(exc)}", ERROR)
    if isinstance(exc, SettingsError):
        return Failure(f"invalid settings: {_one_line(str(exc))}", ERROR)
    if isinstance(exc, psycopg.Error):
        return _pg_failure(exc)
    if isinstance(exc, AuthError) or (
        isinstance(exc, Neo4jError) and (exc.code or "").startswith("Neo.ClientError.Security")
    ):
        return Failure(
            f"Neo4j refused the login ({_one_line(exc.message or str(exc))}): check PG2NEO_NEO4J__USER and "
            "PG2NEO_NEO4J__PASSWORD",
            ERROR,
        )
    if isinstance(exc, ServiceUnavailable | SessionExpired):
        return Failure(f"cannot reach Neo4j: {_one_line(str(exc))} (check PG2NEO_NEO4J__URI)", ERROR)
    if isinstance(exc, ConfigurationError):
        return Failure(f"Neo4j driver configuration: {_one_line(str(exc))} (check PG2NEO_NEO4J__*)", ERROR)
    return Failure(f"internal error {type(exc).__name__}: {_one_line(str(exc))}; {DEBUG_HINT}", INTERNAL)
