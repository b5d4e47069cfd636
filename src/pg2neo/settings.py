"""Typed settings, loaded once by the CLI (env `PG2NEO_*`, `__` for nesting) and passed down.

`load_settings` is the one way in: it refuses a misspelt `PG2NEO_*` variable by name (with the name it probably
meant), turns pydantic's errors into one `ConfigError` that never quotes a value (a value may be a password),
and registers the configured passwords with `pg2neo.logs` so that no output line can show them.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from pg2neo import logs
from pg2neo.errors import ConfigError

ENV_PREFIX = "PG2NEO_"
# Variables of the test harness (tests/conftest.py) share the prefix but are not settings.
RESERVED_PREFIXES = ("PG2NEO_TEST_",)
# Recovery rolls back a prepared strict transaction that has no decision once it is this old (seconds): the one
# default of `PG2NEO_CHECK__PREPARED_TIMEOUT`, `pg2neo recover --timeout` and `coordinate.StrictSettings`.
PREPARED_TIMEOUT = 60.0


class Neo4jSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str | None = None
    user: str = "neo4j"
    password: SecretStr | None = None
    database: str = "neo4j"


class ApplySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_rows: int = Field(default=5000, ge=1, le=1_000_000)
    batch_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    poll_interval: float = Field(default=0.2, gt=0)
    snapshot_batch_rows: int = Field(default=5000, ge=1)
    # How long the snapshot keeps the apply lock for consecutive pages before it lets `run` take a turn.
    snapshot_hold_seconds: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=8, ge=0)


class CheckSettings(BaseModel):
    """The drift check the service runs while idle, and recovery of in-doubt strict transactions (seconds)."""

    model_config = ConfigDict(extra="forbid")

    interval: float = Field(default=300.0, gt=0)
    full_interval: float = Field(default=3600.0, gt=0)
    stale_after: float = Field(default=60.0, ge=0)
    enabled: bool = True
    recovery_interval: float = Field(default=15.0, gt=0)
    prepared_timeout: float = Field(default=PREPARED_TIMEOUT, gt=0)
    schema_interval: float = Field(default=5.0, gt=0)  # the running service's check of the mapped tables' catalog


class DevSettings(BaseModel):
    """The embedded local stack (`pg2neo dev up`)."""

    model_config = ConfigDict(extra="forbid")

    state_dir: Path = Path(".state")
    cache_dir: Path = Path.home() / ".cache" / "pg2neo"
    neo4j_heap: str = "1g"
    neo4j_pagecache: str = "1g"
    pg_shared_buffers: str = "512MB"


class ConsoleSettings(BaseModel):
    """The web console (`pg2neo console`)."""

    model_config = ConfigDict(extra="forbid")

    token: SecretStr | None = None  # required when bound beyond loopback; generated and printed once if unset


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    pg_dsn: SecretStr | None = None
    neo4j: Neo4jSettings = Neo4jSettings()
    mapping: Path = Path("pg2neo.yaml")
    apply: ApplySettings = ApplySettings()
    dev: DevSettings = DevSettings()
    check: CheckSettings = CheckSettings()
    console: ConsoleSettings = ConsoleSettings()
    metrics_port: int | None = None
    audit_retention_days: int = Field(default=30, ge=1)


def setting_names() -> list[str]:
    """Every environment variable a setting is read from: `PG2NEO_NEO4J` (JSON) and `PG2NEO_NEO4J__URI` alike."""
    names = []
    for name, field in Settings.model_fields.items():
        names.append(f"{ENV_PREFIX}{name.upper()}")
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            names += [f"{ENV_PREFIX}{name.upper()}__{sub.upper()}" for sub in nested.model_fields]
    return names


def _unknown_variables(environ: Mapping[str, str]) -> list[str]:
    known = set(setting_names())
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(RESERVED_PREFIXES) or upper in known:
            continue
        guess = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        hint = f" (did you mean {guess[0]}?)" if guess else f" (known: {', '.join(sorted(known))})"
        problems.append(f"unknown setting {name}{hint}")
    return problems


def _variable(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def describe_validation_error(exc: ValidationError) -> str:
    """pydantic's errors as `VARIABLE: what is wrong`, without the input values (one may be a password)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        variable = _variable(error["loc"])
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown setting {variable}")
        else:
            parts.append(f"{variable}: {error['msg']}")
    return "; ".join(parts)


def dsn_passwords(dsn: str) -> list[str]:
    """The password parts of a libpq connection string, found even when it does not parse (to mask them)."""
    found = [m.group(1) for m in re.finditer(r"password\s*=\s*('(?:[^'\\]|\\.)*'?|\S+)", dsn, re.IGNORECASE)]
    found += [value.strip("'") for value in found]
    authority = re.match(r"\s*[a-z][a-z0-9+.-]*://([^/?#]*)@", dsn, re.IGNORECASE)
    if authority and ":" in authority.group(1):
        found.append(authority.group(1).split(":", 1)[1])
    return [value for value in found if value]


def _register_secrets(environ: Mapping[str, str]) -> None:
    # Before validation: a secret must stay hidden even when the settings are refused. A misspelt name may hold
    # anything, a password included, so its whole value is masked too.
    known = set(setting_names())
    for name, value in environ.items():
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(RESERVED_PREFIXES):
            continue
        for secret in dsn_passwords(value):
            logs.add_secret(secret)
        if upper not in known or re.search("PAS|PW|SECRET|TOKEN", upper.removeprefix(ENV_PREFIX)):
            logs.add_secret(value)


def load_settings() -> Settings:
    """The settings from the environment; every mistake in them is one `ConfigError` naming the variable."""
    _register_secrets(os.environ)
    problems = _unknown_variables(os.environ)
    if problems:
        raise ConfigError("; ".join(problems))
    try:
        settings = Settings()
    except ValidationError as exc:
        # `from None`: pydantic's own text quotes the input values, and a traceback would show it.
        raise ConfigError(f"invalid settings: {describe_validation_error(exc)}") from None
    except SettingsError as exc:
        field = re.search(r'field "(\w+)"', str(exc))
        variable = f"{ENV_PREFIX}{field.group(1).upper()}" if field else f"a {ENV_PREFIX}* variable"
        raise ConfigError(
            f"invalid settings: {variable} is not valid JSON; set single values as {variable}__<NAME> instead"
        ) from None
    if settings.neo4j.password is not None:  # also given as JSON in PG2NEO_NEO4J
        logs.add_secret(settings.neo4j.password.get_secret_value())
    if settings.console.token is not None:
        logs.add_secret(settings.console.token.get_secret_value())
    return settings
