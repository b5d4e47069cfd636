"""`pg2neo verify`, `pg2neo reconcile` and `pg2neo conflicts`: thin commands over pg2neo.reconcile.

Exit codes: 0 = in sync (or done), 1 = drift found (verify) / items left unsettled, 2 = error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from pg2neo.cli.app import app, console, fail, open_pipeline
from pg2neo.errors import Pg2NeoError, ReconcileError
from pg2neo.reconcile import policies, repair
from pg2neo.reconcile.background import background_check
from pg2neo.reconcile.verify import KINDS, ProgressFn, VerifyReport, verify
from pg2neo.transport import conflicts

conflicts_app = typer.Typer(help="Conflicts recorded by `reconcile --policy manual`.", no_args_is_help=True)
app.add_typer(conflicts_app, name="conflicts")


@contextmanager
def _progress(enabled: bool) -> Iterator[ProgressFn | None]:
    """A progress bar per table and side on stderr while verify reads (only on a terminal: logs and pipes stay
    clean)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} of ~{task.total:,}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def tell(what: str, done: int, estimate: int) -> None:
        if what not in tasks:
            tasks[what] = bars.add_task(what, total=max(estimate, 1))
        bars.update(tasks[what], completed=done, total=max(estimate, done, 1))

    with bars:
        yield tell


def _print_report(report: VerifyReport) -> None:
    table = Table("scope", "PostgreSQL", "Neo4j", *KINDS, title=f"verify ({report.mode}, {report.seconds:.1f}s)")
    for s in report.scopes:
        style = "red" if any(s.counts.values()) else None
        table.add_row(s.scope, f"{s.pg_items:,}", f"{s.neo4j_items:,}", *(str(s.counts[k]) for k in KINDS), style=style)
    console.print(table)
    for s in report.scopes:
        for kind, sample in s.samples.items():
            if sample:
                console.print(f"  {s.scope} {kind}: " + "; ".join(" ".join(i) for i in sample))
    if report.collisions:
        console.print(
            f"[bold red]key collisions: {report.collisions}[/] (PostgreSQL rows that map to the key of another row, "
            "so Neo4j holds one item for several rows; the mapping's key must stay exact, see docs/mapping.md)"
        )
        for s in report.scopes:
            if s.collision_samples:
                console.print(f"  {s.scope} key collision: " + "; ".join(" ".join(i) for i in s.collision_samples))
    if report.mode == "recent":
        console.print(f"stale syncs: {report.stale}" + (f" e.g. {report.stale_samples}" if report.stale else ""))
    verdict = "[green]in sync[/]" if report.drift_total == 0 else f"[bold red]drift: {report.drift_total}[/]"
    console.print(verdict)


@app.command("verify")
def verify_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    since: Annotated[
        float | None, typer.Option("--since", help="Only rows/nodes changed in the last SECONDS (+ stale syncs).")
    ] = None,
    stale_after: Annotated[float, typer.Option(help="Seconds after which an unsynced change is stale.")] = 60.0,
    samples: Annotated[int, typer.Option(help="Sample identities per kind and scope.")] = 5,
) -> None:
    """Compare PostgreSQL and Neo4j for every mapped label and relationship; exit 1 when they differ."""
    ctx = open_pipeline()
    try:
        if since is None:
            with _progress(not as_json) as progress:
                report = verify(
                    ctx.pg_dsn,
                    ctx.driver,
                    ctx.mapping,
                    ctx.database,
                    samples,
                    progress=progress,
                )
        else:
            report = background_check(ctx.pg_dsn, ctx.driver, ctx.mapping, since, stale_after, ctx.database)
    except Pg2NeoError as exc:
        raise fail(exc) from exc
    except (psycopg.Error, OSError) as exc:
        raise fail(ReconcileError(str(exc).strip())) from exc
    finally:
        ctx.close()
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2, default=str) + "\n")
    else:
        _print_report(report)
    raise typer.Exit(1 if report.drift_total else 0)


@app.command("reconcile")
def reconcile_command(
    policy: Annotated[
        str, typer.Option(help="pg-wins | neo4j-wins | last-write-wins | manual | custom:module:function")
    ] = "pg-wins",
    apply: Annotated[bool, typer.Option("--apply", help="Carry the repair out (default: dry run).")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Verify, then settle every difference by policy; without --apply only shows what it would change."""
    ctx = open_pipeline(check_installed=True)
    try:
        policies.decider_for(policy)  # an unknown policy fails before the scan
        with _progress(not as_json) as progress:
            report = verify(ctx.pg_dsn, ctx.driver, ctx.mapping, ctx.database, progress=progress)
        result = repair.reconcile(
            ctx.pg_dsn,
            ctx.driver,
            ctx.mapping,
            report.drifts,
            policy,
            apply,
            ctx.database,
        )
    except Pg2NeoError as exc:
        raise fail(exc) from exc
    finally:
        ctx.close()
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2, default=str) + "\n")
    else:
        table = Table("scope", "kind", "identity", "decision", title=f"reconcile --policy {policy}")
        for c in result.planned[:200]:
            table.add_row(c.drift.scope, c.drift.kind, " ".join(c.drift.identity), str(c.decision or "-"))
        console.print(table)
        if len(result.planned) > 200:
            console.print(f"... and {len(result.planned) - 200} more")
        if not apply:
            console.print(f"[yellow]dry run[/]: {len(result.planned)} items; run again with --apply to change them")
        else:
            console.print(
                f"[green]applied[/]: Neo4j rewritten for {result.to_neo4j}, PostgreSQL for {result.to_pg}, "
                f"conflicts recorded {result.conflicts_recorded}"
            )
            for error in result.errors or []:
                console.print(f"[red]not settled[/]: {error}")
    raise typer.Exit(1 if result.errors else 0)


def _jsonable(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, default=str) + "\n"


@conflicts_app.command("list")
def conflicts_list(
    include_resolved: Annotated[bool, typer.Option("--all", help="Include resolved conflicts.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Open conflicts (id, scope, kind, identity)."""
    ctx = open_pipeline()
    try:
        rows = conflicts.list_conflicts(ctx.conn, include_resolved)
    finally:
        ctx.close()
    if as_json:
        sys.stdout.write(_jsonable(rows))
        return
    table = Table("id", "scope", "kind", "identity", "detected", "resolution")
    for r in rows:
        table.add_row(
            str(r["id"]), r["scope"], r["kind"], " ".join(r["identity"]), str(r["detected_at"]), r["resolution"] or ""
        )
    console.print(table)


@conflicts_app.command("show")
def conflicts_show(conflict_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Both sides of one conflict, as recorded."""
    ctx = open_pipeline()
    try:
        row = conflicts.get_conflict(ctx.conn, conflict_id)
    finally:
        ctx.close()
    if row is None:
        raise fail(ReconcileError(f"no conflict with id {conflict_id}"))
    sys.stdout.write(_jsonable([row]))


@conflicts_app.command("resolve")
def conflicts_resolve(
    conflict_id: Annotated[int, typer.Argument(metavar="ID")],
    take: Annotated[str, typer.Option("--take", help="pg or neo4j: the side whose current state wins.")],
) -> None:
    """Settle one conflict: rewrite the other side from the chosen one, and mark it resolved."""
    ctx = open_pipeline(check_installed=True)
    try:
        repair.resolve_and_record(ctx.pg_dsn, ctx.driver, ctx.mapping, conflict_id, take, ctx.database, by="cli")
    except Pg2NeoError as exc:
        raise fail(exc) from exc
    finally:
        ctx.close()
    console.print(f"[green]resolved[/] conflict {conflict_id}: took {take}")
