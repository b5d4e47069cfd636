"""`pg2neo mapping suggest`: a first mapping file proposed from the PostgreSQL catalog (docs/suggest.md).

A thin command over `pg2neo.mapping.suggest`. It needs PostgreSQL only. Registered on the main app by
`app.add_typer(mapping_app, name="mapping")`; its errors reach the app's one handler (a line and exit 2).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import psycopg
import typer

from pg2neo import logs
from pg2neo.errors import MappingError
from pg2neo.mapping.suggest import Suggestion, SuggestOptions, suggest
from pg2neo.mapping.suggest_catalog import read_schemas
from pg2neo.runtime.connections import check_dsn, resolve
from pg2neo.settings import load_settings

mapping_app = typer.Typer(help="Write and check mapping files.", no_args_is_help=True)
log = logs.get_logger("cli")


@mapping_app.callback()
def mapping_group() -> None:
    """Write and check mapping files (docs/mapping.md, docs/suggest.md)."""


def _pg_dsn() -> str:
    settings = load_settings()
    if settings.pg_dsn is not None:
        # PostgreSQL is all this command reads: it does not need the Neo4j settings `resolve` insists on.
        dsn = settings.pg_dsn.get_secret_value()
        check_dsn(dsn)
        return dsn
    return resolve(settings).pg_dsn


def summary(result: Suggestion) -> str:
    return (
        f"suggested {len(result.nodes)} node table(s), {len(result.joins)} join table(s), "
        f"{sum(len(n.relationships) for n in result.nodes)} foreign-key relationship(s); "
        f"{len(result.skipped)} table(s) left out (see the comments)"
    )


@mapping_app.command("suggest")
def suggest_command(
    schema: Annotated[
        list[str] | None, typer.Option("--schema", "-s", help="A schema to read (repeatable; default public).")
    ] = None,
    tables: Annotated[
        list[str] | None,
        typer.Option("--tables", "-t", help="Only these tables: names or globs, `orders`, `sales.*` (repeatable)."),
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", "-x", help="Leave out these tables: names or globs (repeatable).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the YAML here instead of stdout.")] = None,
) -> None:
    """Propose a mapping file from the catalog: tables with a key become nodes, foreign keys relationships, join
    tables relationships with properties. Review it, then `pg2neo init`."""
    options = SuggestOptions(
        schemas=tuple(dict.fromkeys(schema or ["public"])),
        tables=tuple(tables or ()),
        exclude=tuple(exclude or ()),
    )
    with psycopg.connect(_pg_dsn(), autocommit=True, application_name="pg2neo-suggest") as conn:
        result = suggest(read_schemas(conn, list(options.schemas)), options)
    if not result.nodes:
        reasons = "; ".join(f"{s.table}: {s.reason}" for s in result.skipped) or "the schemas have no tables"
        raise MappingError(
            f"no table of {', '.join(options.schemas)} can be mapped ({reasons}); choose other tables with "
            f"--schema / --tables / --exclude"
        )
    text = result.yaml()
    logs.event(
        log,
        "mapping_suggested",
        logging.INFO,
        nodes=len(result.nodes),
        joins=len(result.joins),
        skipped=len(result.skipped),
    )
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise MappingError(f"cannot write {out}: {exc.strerror}; pass a writable path with --out") from exc
    typer.echo(f"{summary(result)}; written to {out}. Review it, then: pg2neo --mapping {out} init", err=True)
