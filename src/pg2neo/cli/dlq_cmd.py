"""`pg2neo dlq`: list, show, retry and drop the dead letters (rows the applier could not store in Neo4j).

Place in the data flow: beside the queue. A retry puts the row's key back into `pg2neo.changes`, so the applier
re-reads the CURRENT row and applies it through the same version guards as any change (a stale dead letter can
never overwrite newer data). The engine removes the dead letter when the key is applied cleanly; if it fails
again the dead letter stays, with `attempts` one higher and a new `last_failed_at`.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import psycopg
import typer
from rich.padding import Padding
from rich.text import Text

from pg2neo.cli.main import app, console, fail, settings
from pg2neo.errors import Pg2NeoError
from pg2neo.runtime.connections import resolve

dlq_app = typer.Typer(help="Dead letters: rows Neo4j refused or pg2neo could not convert.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")

NAMES = ["id", "tbl", "key", "op", "error_class", "message", "attempts", "first_failed_at", "last_failed_at"]
LIST_SQL = (
    "SELECT id, tbl, key, op, error_class, message, attempts, first_failed_at, last_failed_at "
    "FROM pg2neo.dead_letters ORDER BY id LIMIT %s"
)
SHOW_SQL = (
    "SELECT id, tbl, key, op, error_class, message, attempts, first_failed_at, last_failed_at, payload "
    "FROM pg2neo.dead_letters WHERE id = %s"
)


def _connect() -> psycopg.Connection[Any]:
    # Settings and connection errors reach the app's one handler (pg2neo.cli.main): a clean line and exit 2.
    return psycopg.connect(resolve(settings()).pg_dsn, autocommit=True)


def _selection(ids: list[int], all_: bool) -> list[int] | None:
    """The ids to act on, or None for all of them; exactly one of the two ways must be given."""
    if all_ == bool(ids):
        raise fail(Pg2NeoError("give dead-letter ids, or --all (not both)"))
    return None if all_ else ids


def _not_installed(exc: psycopg.errors.UndefinedTable) -> typer.Exit:
    detail = exc.diag.message_primary
    return fail(Pg2NeoError(f"pg2neo is not installed in this database: run `pg2neo init` ({detail})"))


@dlq_app.command("list")
def dlq_list(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option(help="At most this many, oldest first.")] = 100,
) -> None:
    """The dead letters: table, key, error class, attempts, first and last failure."""
    with _connect() as conn:
        try:
            rows = conn.execute(LIST_SQL, (limit,)).fetchall()
        except psycopg.errors.UndefinedTable as exc:
            raise _not_installed(exc) from exc
    if as_json:
        sys.stdout.write(json.dumps([dict(zip(NAMES, r, strict=True)) for r in rows], default=str, indent=2) + "\n")
        return
    for r in rows:
        _print_dead_letter(r)
    console.print(f"{len(rows)} dead letter(s); `pg2neo dlq show ID` prints one in full")


def _print_dead_letter(row: tuple[Any, ...]) -> None:
    """One dead letter as a short block that reads at any width, 80 columns included: a heading line, the key
    (cut with an ellipsis: a key may be 10,000 characters) and the reason, wrapped under its indent."""
    dl_id, table, key, op, error_class, message, attempts, _first, last = row
    heading = Text.assemble(
        (f"#{dl_id}", "bold"), f"  {table}  {op}  attempts {attempts}  last failed {last:%Y-%m-%d %H:%M:%S}"
    )
    console.print(heading, no_wrap=True, overflow="ellipsis", highlight=False)
    console.print(Text(f"    key    {json.dumps(key)}"), no_wrap=True, overflow="ellipsis", highlight=False)
    reason = " ".join(str(message).split())
    console.print(Padding(Text(f"reason {error_class}: {reason}"), (0, 0, 0, 4)), highlight=False)


@dlq_app.command("show")
def dlq_show(dead_letter_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """One dead letter in full: the error message and the row's payload."""
    with _connect() as conn:
        try:
            row = conn.execute(SHOW_SQL, (dead_letter_id,)).fetchone()
        except psycopg.errors.UndefinedTable as exc:
            raise _not_installed(exc) from exc
    if row is None:
        raise fail(Pg2NeoError(f"no dead letter with id {dead_letter_id}"))
    sys.stdout.write(json.dumps(dict(zip([*NAMES, "payload"], row, strict=True)), default=str, indent=2) + "\n")


@dlq_app.command("retry")
def dlq_retry(
    ids: Annotated[list[int] | None, typer.Argument(metavar="[ID]...")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Retry every dead letter.")] = False,
) -> None:
    """Queue the keys again: the applier re-reads the current rows; a key that applies cleanly loses its letter."""
    chosen = _selection(ids or [], all_)
    with _connect() as conn, conn.transaction():
        try:
            cur = conn.execute(
                "INSERT INTO pg2neo.changes (tbl, op, key) SELECT tbl, op, key FROM pg2neo.dead_letters "
                "WHERE %(all)s OR id = ANY(%(ids)s) ORDER BY id",
                {"all": chosen is None, "ids": chosen or []},
            )
        except psycopg.errors.UndefinedTable as exc:
            raise _not_installed(exc) from exc
    console.print(f"[green]re-queued[/]: {cur.rowcount} key(s); `pg2neo run` applies them")


@dlq_app.command("drop")
def dlq_drop(
    ids: Annotated[list[int] | None, typer.Argument(metavar="[ID]...")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Drop every dead letter.")] = False,
) -> None:
    """Forget dead letters (the rows stay as they are in PostgreSQL and are not in Neo4j)."""
    chosen = _selection(ids or [], all_)
    with _connect() as conn:
        try:
            cur = conn.execute(
                "DELETE FROM pg2neo.dead_letters WHERE %(all)s OR id = ANY(%(ids)s)",
                {"all": chosen is None, "ids": chosen or []},
            )
        except psycopg.errors.UndefinedTable as exc:
            raise _not_installed(exc) from exc
    console.print(f"[green]dropped[/]: {cur.rowcount} dead letter(s)")
