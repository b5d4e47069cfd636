"""Typed settings, loaded once by the CLI (env `PG2NEO_*`, `__` for nesting) and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    # Test-only fault injection: probability of SIGKILL between the Neo4j commit and the queue ack.
    fault_kill_after_commit: float = Field(default=0.0, ge=0.0, le=1.0)


class CheckSettings(BaseModel):
    """The drift check the service runs while idle, and recovery of in-doubt strict transactions (seconds)."""

    interval: float = Field(default=300.0, gt=0)
    full_interval: float = Field(default=3600.0, gt=0)
    stale_after: float = Field(default=60.0, ge=0)
    enabled: bool = True
    recovery_interval: float = Field(default=15.0, gt=0)
    prepared_timeout: float = Field(default=60.0, gt=0)


class DevSettings(BaseModel):
    """The embedded local stack (`pg2neo dev up`)."""

    model_config = ConfigDict(extra="forbid")

    state_dir: Path = Path(".state")
    cache_dir: Path = Path.home() / ".cache" / "pg2neo"
    neo4j_heap: str = "1g"
    neo4j_pagecache: str = "1g"
    pg_shared_buffers: str = "512MB"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PG2NEO_", env_nested_delimiter="__", extra="forbid")

    pg_dsn: SecretStr | None = None
    neo4j: Neo4jSettings = Neo4jSettings()
    mapping: Path = Path("pg2neo.yaml")
    apply: ApplySettings = ApplySettings()
    dev: DevSettings = DevSettings()
    check: CheckSettings = CheckSettings()
    metrics_port: int | None = None
    audit_retention_days: int = Field(default=30, ge=1)
