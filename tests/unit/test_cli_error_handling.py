"""Errors at the CLI boundary: redaction of secrets, settings mistakes, and what each error means for the exit.

Place in the data flow: before it — the `pg2neo` command's one error handler (pg2neo.cli.app, pg2neo.cli.exits),
the settings loader and the connection checks. No server: the commands here fail before they open a socket.
"""

from __future__ import annotations

import json
import os

import psycopg
import pytest
import typer
from neo4j.exceptions import AuthError, ServiceUnavailable
from typer.testing import CliRunner

from pg2neo import logs
from pg2neo.cli import exits
from pg2neo.cli.main import app
from pg2neo.coordinate import RecoveryReport
from pg2neo.errors import ConfigError, MappingError, Pg2NeoError, SchemaDriftError
from pg2neo.runtime.connections import check_dsn
from pg2neo.settings import Settings, dsn_passwords, load_settings, setting_names

SECRET = "Hunter2-secret"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.upper().startswith("PG2NEO_"):
            monkeypatch.delenv(name)
    return monkeypatch


# -- redaction ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://app:zq-Unlisted-1@db:5432/x",
        "postgresql://app:zq Unlisted 1@db:5432/x",
        "postgresql://app:zq%zzUnlisted@db:5432/x",
        "postgresql://app:zq@Unlisted@db:5432/x",
        "host=db password=zqUnlisted user=x",
        "host=db password='zq Unlisted \\' 1' user=x",
    ],
)
def test_redact_masks_the_password_of_any_connection_string(text: str) -> None:
    redacted = logs.redact(f"connection failed: {text} (retrying)")
    assert "Unlisted" not in redacted and "***" in redacted and "(retrying)" in redacted


def test_redact_keeps_what_is_not_a_secret() -> None:
    assert logs.redact("postgresql://app:hunter2@db:5432/x") == "postgresql://app:***@db:5432/x"
    text = '{"uri": "bolt://127.0.0.1:7687", "user": "a@b", "detail": "connection refused"}'
    assert logs.redact(text) == text


def test_registered_secrets_are_masked_in_every_form() -> None:
    secret = 'p%zz s"ecret-4711'
    logs.add_secret(secret)
    assert "ecret-4711" not in logs.redact(f"invalid percent-encoded token: {secret}")
    assert "ecret-4711" not in logs.redact(json.dumps({"error": secret}))
    assert "ecret-4711" not in logs.redact("p%25zz%20s%22ecret-4711")


def test_dsn_passwords_are_found_even_in_strings_libpq_refuses() -> None:
    assert "pa ss" in dsn_passwords("postgresql://u:pa ss@127.0.0.1:1/db")
    assert "p%zzsecret" in dsn_passwords("postgresql://u:p%zzsecret@127.0.0.1:1/db")
    assert "a b" in dsn_passwords("host=x password='a b' dbname=y")


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:p%zzsecretword@127.0.0.1:1/db",
        "postgresql://u:pa ss secretword@127.0.0.1:1/db",
        "host=127.0.0.1 port=1 password=sec secretword",
        "postgresql://u:p@secretword@127.0.0.1:1/db",
    ],
)
def test_a_dsn_libpq_cannot_read_is_a_config_error_without_the_password(dsn: str) -> None:
    with pytest.raises(ConfigError) as refused:
        check_dsn(dsn)
    message = str(refused.value)
    assert "PG2NEO_PG_DSN" in message and "secretword" not in message and "percent-encode" in message
    # Nothing chained: a traceback of the error (--log-level debug) must not carry libpq's own message.
    assert refused.value.__cause__ is None
    assert refused.value.__context__ is None or refused.value.__suppress_context__


# -- settings -----------------------------------------------------------------------------------------------


def test_a_misspelt_variable_is_named_with_the_right_name_and_never_its_value(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PG2NEO_NEO4J__PASWORD", "topsecret-1")
    clean_env.setenv("PG2NEO_PGDSN", "postgresql://u:topsecret-2@h/db")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert "PG2NEO_NEO4J__PASWORD (did you mean PG2NEO_NEO4J__PASSWORD?)" in message
    assert "PG2NEO_PGDSN (did you mean PG2NEO_PG_DSN?)" in message
    assert "topsecret" not in message
    assert "topsecret" not in logs.redact("echoed: topsecret-1")


def test_a_bad_value_names_the_variable_and_not_the_value(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PG2NEO_APPLY__BATCH_ROWS", "manysecret")
    with pytest.raises(ConfigError, match="PG2NEO_APPLY__BATCH_ROWS: Input should be a valid integer") as refused:
        load_settings()
    assert "manysecret" not in str(refused.value)
    clean_env.delenv("PG2NEO_APPLY__BATCH_ROWS")
    clean_env.setenv("PG2NEO_NEO4J", "{not json secretjson")
    with pytest.raises(ConfigError, match="PG2NEO_NEO4J is not valid JSON") as refused_json:
        load_settings()
    assert "secretjson" not in str(refused_json.value)


def test_test_harness_variables_are_not_settings(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PG2NEO_TEST_PG_DSN", "postgresql://x@y/z")
    clean_env.setenv("PG2NEO_NEO4J__URI", "bolt://h:7687")
    assert load_settings().neo4j.uri == "bolt://h:7687"
    assert {"PG2NEO_PG_DSN", "PG2NEO_NEO4J__PASSWORD", "PG2NEO_MAPPING"} <= set(setting_names())


# -- exit codes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code", "words"),
    [
        (ConfigError("no servers configured"), exits.ERROR, "no servers"),
        (MappingError("pg2neo.yaml:3: no table x"), exits.ERROR, "pg2neo.yaml:3"),
        (SchemaDriftError("content_items.title was renamed"), exits.NEEDS_OPERATOR, "renamed"),
        (psycopg.OperationalError("connection failed:\n\tIs the server running?"), exits.ERROR, "PG2NEO_PG_DSN"),
        (psycopg.errors.InsufficientPrivilege("must be owner of table t"), exits.ERROR, "owns the mapped tables"),
        (AuthError("The client is unauthorized due to authentication failure."), exits.ERROR, "PASSWORD"),
        (ServiceUnavailable("Couldn't connect to 127.0.0.1:1"), exits.ERROR, "PG2NEO_NEO4J__URI"),
        (RuntimeError("unexpected"), exits.INTERNAL, "--log-level debug"),
    ],
)
def test_each_error_kind_has_its_exit_code_and_one_line(exc: BaseException, code: int, words: str) -> None:
    failure = exits.failure_for(exc)
    assert failure.code == code and words in failure.message and "\n" not in failure.message


def test_exit_codes_are_distinct() -> None:
    codes = [exits.OK, exits.DRIFT, exits.ERROR, exits.NEEDS_OPERATOR, exits.INTERNAL, exits.INTERRUPTED]
    assert len(set(codes)) == len(codes)


# -- the command's one handler ------------------------------------------------------------------------------


@pytest.mark.parametrize("json_logs", [False, True])
@pytest.mark.parametrize("command", [["status"], ["dlq", "list"], ["uninstall"], ["verify"], ["init"]])
def test_bad_dsn_is_one_line_exit_2_without_the_secret(
    clean_env: pytest.MonkeyPatch, command: list[str], json_logs: bool
) -> None:
    clean_env.setenv("PG2NEO_PG_DSN", "postgresql://u:p%zzsecretword@127.0.0.1:1/db")
    clean_env.setenv("PG2NEO_NEO4J__URI", "bolt://127.0.0.1:1")
    clean_env.setenv("PG2NEO_NEO4J__PASSWORD", "neo-secretword")
    result = CliRunner().invoke(app, [*(["--log-json"] if json_logs else []), *command])
    assert result.exit_code == exits.ERROR, result.output
    assert "secretword" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "PG2NEO_PG_DSN" in lines[0]
    if json_logs:
        assert json.loads(lines[0])["exit_code"] == exits.ERROR


def test_an_internal_error_is_one_line_with_the_debug_hint(
    clean_env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("boom at postgresql://u:internalsecret@h/db")

    monkeypatch.setattr("pg2neo.cli.sync_cmd.resolve", broken)
    result = CliRunner().invoke(app, ["uninstall"])
    assert result.exit_code == exits.INTERNAL
    [line] = result.stderr.strip().splitlines()
    assert "RuntimeError" in line and "--log-level debug" in line and "internalsecret" not in line
    debug = CliRunner().invoke(app, ["--log-level", "debug", "uninstall"])
    assert debug.exit_code == exits.INTERNAL
    assert "Traceback" in debug.stderr and "internalsecret" not in debug.stderr


def test_fail_keeps_its_contract_for_the_commands_that_call_it() -> None:
    from pg2neo.cli.app import fail

    assert isinstance(fail(Pg2NeoError("x")), typer.Exit)


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({}, [], 60.0),
        ({"PG2NEO_CHECK__PREPARED_TIMEOUT": "90"}, [], 90.0),
        ({"PG2NEO_CHECK__PREPARED_TIMEOUT": "90"}, ["--timeout", "5"], 5.0),
    ],
)
def test_recover_timeout_defaults_to_the_prepared_timeout_setting(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], args: list[str], expected: float
) -> None:
    class FakePipeline:
        conn = driver = None
        database = "neo4j"

        def __init__(self, settings: Settings) -> None:
            self.settings = settings

        @classmethod
        def open(cls, settings: Settings, check_installed: bool = False) -> FakePipeline:
            return cls(settings)

        def __enter__(self) -> FakePipeline:
            return self

        def __exit__(self, *_: object) -> None:
            pass

    timeouts = []

    def fake_recover(conn: object, driver: object, database: str, timeout: float) -> RecoveryReport:
        timeouts.append(timeout)
        return RecoveryReport()

    for name, value in env.items():
        clean_env.setenv(name, value)
    clean_env.setattr("pg2neo.cli.app.Pipeline", FakePipeline)
    clean_env.setattr("pg2neo.cli.strict_cmd.recover", fake_recover)
    result = CliRunner().invoke(app, ["recover", "--json", *args])
    assert result.exit_code == 0, result.output
    assert timeouts == [expected]


def test_help_names_the_environment_variables() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "100"})
    for name in ("PG2NEO_PG_DSN", "PG2NEO_NEO4J__URI", "PG2NEO_NEO4J__USER", "PG2NEO_NEO4J__PASSWORD"):
        assert name in result.stdout
    assert "PG2NEO_MAPPING" in result.stdout and "double underscore" in result.stdout
    assert "Exit codes" in result.stdout
