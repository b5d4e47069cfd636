"""The `pg2neo` command: thin commands that load settings, build the runtime and call it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pg2neo import logs
from pg2neo.devstack.stack import LocalStack
from pg2neo.errors import Pg2NeoError
from pg2neo.settings import Settings

app = typer.Typer(help="Keep a Neo4j graph continuously and verifiably in sync with PostgreSQL.", no_args_is_help=True)
dev_app = typer.Typer(help="The embedded local PostgreSQL + Neo4j stack.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")

console = Console()
err_console = Console(stderr=True)


class _State:
    settings: Settings | None = None


def settings() -> Settings:
    if _State.settings is None:
        _State.settings = Settings()
    return _State.settings


@app.callback()
def main(
    mapping: Annotated[Path | None, typer.Option("--mapping", "-m", help="The mapping file (YAML).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
    log_json: Annotated[bool, typer.Option(help="Log one JSON object per line.")] = False,
) -> None:
    logs.configure(log_level, log_json)
    loaded = Settings()
    if mapping is not None:
        loaded = loaded.model_copy(update={"mapping": mapping})
    _State.settings = loaded


def fail(exc: Pg2NeoError) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=2)


@dev_app.command("up")
def dev_up() -> None:
    """Start the local PostgreSQL 15 and Neo4j 5.26 (with APOC); return when both answer."""
    stack = LocalStack(settings().dev)
    started = time.monotonic()
    try:
        timings = stack.up()
    except Pg2NeoError as exc:
        raise fail(exc) from exc
    info = stack.info()
    console.print(
        f"[green]up[/] in {time.monotonic() - started:.1f}s "
        f"(postgres {timings['postgres']:.1f}s, neo4j {timings['neo4j']:.1f}s)\n"
        f"  PostgreSQL  {info.pg_dsn}\n  Neo4j       {info.neo4j_uri}  user neo4j, password in "
        f"{stack.neo4j.password_file}"
    )


@dev_app.command("down")
def dev_down() -> None:
    """Stop both local servers cleanly."""
    try:
        LocalStack(settings().dev).down()
    except Pg2NeoError as exc:
        raise fail(exc) from exc
    console.print("[green]down[/]")


@dev_app.command("status")
def dev_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Versions, ports, data folders and whether each server is up."""
    status = LocalStack(settings().dev).status()
    if as_json:
        sys.stdout.write(json.dumps(status, indent=2) + "\n")
        return
    table = Table("server", "up", "version", "port", "data")
    pg, neo = status["postgres"], status["neo4j"]
    table.add_row("PostgreSQL", str(pg["up"]), pg.get("version", ""), str(pg.get("port", "")), pg.get("data", ""))
    table.add_row(
        "Neo4j",
        str(neo["up"]),
        f"{neo.get('version', '')} (APOC {neo.get('apoc', '')})",
        str(neo.get("bolt_port", "")),
        neo.get("data", ""),
    )
    console.print(table)


def run() -> None:
    app()


if __name__ == "__main__":
    run()
