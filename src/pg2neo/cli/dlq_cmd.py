"""`pg2neo dlq`: list, show, retry and drop the dead letters (rows the applier could not store in Neo4j).

A thin command over `pg2neo.transport.dead_letters`, which the web console uses too: a retry re-queues the row's key
and the applier re-reads the current row; the engine removes the dead letter once the key applies cleanly.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import psycopg
import typer
from rich.padding import Padding
from rich.text import Text

from pg2neo.cli.app import app, console, fail, settings
from pg2neo.errors import Pg2NeoError
from pg2neo.runtime.connections import resolve
from pg2neo.transport import dead_letters

dlq_app = typer.Typer(help="Dead letters: rows Neo4j refused or pg2neo could not convert.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


def _connect() -> psycopg.Connection[Any]:
    # Settings and connection errors reach the app's one handler (pg2neo.cli.app): a clean line and exit 2.
    return psycopg.connect(resolve(settings()).pg_dsn, autocommit=True)


def _selection(ids: list[int], all_: bool) -> list[int] | None:
    """The ids to act on, or None for all of them; exactly one of the two ways must be given."""
    if all_ == bool(ids):
        raise fail(Pg2NeoError("give dead-letter ids, or --all (not both)"))
    return None if all_ else ids


@dlq_app.command("list")
def dlq_list(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option(help="At most this many, oldest first.")] = 100,
) -> None:
    """The dead letters: table, key, error class, attempts, first and last failure."""
    with _connect() as conn:
        try:
            rows = dead_letters.list_dead_letters(conn, limit)
        except Pg2NeoError as exc:
            raise fail(exc) from exc
    if as_json:
        sys.stdout.write(json.dumps(rows, default=str, indent=2) + "\n")
        return
    for r in rows:
        _print_dead_letter(r)
    console.print(f"{len(rows)} dead letter(s); `pg2neo dlq show ID` prints one in full")


def _print_dead_letter(row: dict[str, Any]) -> None:
    """One dead letter as a short block that reads at any width, 80 columns included: a heading line, the key
    (cut with an ellipsis: a key may be 10,000 characters) and the reason, wrapped under its indent."""
    last = f"{row['last_failed_at']:%Y-%m-%d %H:%M:%S}"
    heading = Text.assemble(
        (f"#{row['id']}", "bold"), f"  {row['tbl']}  {row['op']}  attempts {row['attempts']}  last failed {last}"
    )
    console.print(heading, no_wrap=True, overflow="ellipsis", highlight=False)
    console.print(Text(f"    key    {json.dumps(row['key'])}"), no_wrap=True, overflow="ellipsis", highlight=False)
    reason = " ".join(str(row["message"]).split())
    console.print(Padding(Text(f"reason {row['error_class']}: {reason}"), (0, 0, 0, 4)), highlight=False)


@dlq_app.command("show")
def dlq_show(dead_letter_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """One dead letter in full: the error message and the row's payload."""
    with _connect() as conn:
        try:
            row = dead_letters.get_dead_letter(conn, dead_letter_id)
        except Pg2NeoError as exc:
            raise fail(exc) from exc
    if row is None:
        raise fail(Pg2NeoError(f"no dead letter with id {dead_letter_id}"))
    sys.stdout.write(json.dumps(row, default=str, indent=2) + "\n")


@dlq_app.command("retry")
def dlq_retry(
    ids: Annotated[list[int] | None, typer.Argument(metavar="[ID]...")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Retry every dead letter.")] = False,
) -> None:
    """Queue the keys again: the applier re-reads the current rows; a key that applies cleanly loses its letter."""
    chosen = _selection(ids or [], all_)
    with _connect() as conn:
        try:
            queued = dead_letters.retry_dead_letters(conn, chosen)
        except Pg2NeoError as exc:
            raise fail(exc) from exc
    console.print(f"[green]re-queued[/]: {queued} key(s); `pg2neo run` applies them")


@dlq_app.command("drop")
def dlq_drop(
    ids: Annotated[list[int] | None, typer.Argument(metavar="[ID]...")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Drop every dead letter.")] = False,
) -> None:
    """Forget dead letters (the rows stay as they are in PostgreSQL and are not in Neo4j)."""
    chosen = _selection(ids or [], all_)
    with _connect() as conn:
        try:
            dropped = dead_letters.drop_dead_letters(conn, chosen)
        except Pg2NeoError as exc:
            raise fail(exc) from exc
    console.print(f"[green]dropped[/]: {dropped} dead letter(s)")
