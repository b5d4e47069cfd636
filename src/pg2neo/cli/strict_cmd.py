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
from pg2neo.cli.app import console, fail, open_pipeline
from pg2neo.coordinate import recover
from pg2neo.errors import Pg2NeoError
from pg2neo.settings import PREPARED_TIMEOUT


def recover_command(
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Roll back prepared strict transactions without Neo4j marker once this many seconds old.",
            show_default=f"PG2NEO_CHECK__PREPARED_TIMEOUT, else {PREPARED_TIMEOUT}",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Settle strict transactions left prepared in PostgreSQL: commit those Neo4j committed, roll back the rest."""
    with open_pipeline() as pipeline:
        if timeout is None:
            timeout = pipeline.settings.check.prepared_timeout
        try:
            report = recover(pipeline.conn, pipeline.driver, pipeline.database, timeout)
        except Pg2NeoError as exc:
            raise fail(exc) from exc
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
