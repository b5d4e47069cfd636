"""`pg2neo recover`: settle in-doubt strict-mode transactions (a thin command over pg2neo.coordinate.recovery).

Exit codes (pg2neo.cli.exits): 0 = nothing left in doubt, 3 = some prepared transactions are still too young to
settle (run it again later), 2 = error.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from pg2neo.cli import exits
from pg2neo.cli.main import _context, app, console, fail
from pg2neo.coordinate import StrictSettings, recover
from pg2neo.errors import Pg2NeoError


@app.command("recover")
def recover_command(
    timeout: Annotated[
        float,
        typer.Option(help="Roll back prepared strict transactions without Neo4j marker once this many seconds old."),
    ] = StrictSettings().prepared_timeout,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Settle strict transactions left prepared in PostgreSQL: commit those Neo4j committed, roll back the rest."""
    ctx = _context()
    try:
        report = recover(ctx.conn, ctx.driver, ctx.connections.neo4j_database, timeout)
    except Pg2NeoError as exc:
        raise fail(exc) from exc
    finally:
        ctx.close()
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        console.print(
            f"committed {len(report.committed)}, rolled back {len(report.rolled_back)}, "
            f"left in doubt {len(report.in_doubt)} (younger than {timeout:g}s), "
            f"markers removed {report.markers_removed}"
        )
    if report.in_doubt:
        raise typer.Exit(code=exits.NEEDS_OPERATOR)
