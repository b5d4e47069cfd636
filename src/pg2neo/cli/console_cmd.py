"""`pg2neo console`: serve the web console (status, dead letters, conflicts, verify) until stopped.

A thin command: it loads the settings, mapping and connections like every sync command, and serves
`pg2neo.console.app.ConsoleApp` with the standard library's threaded WSGI server. The lead registers it on the
app in `pg2neo.cli.main` (`app.command()(console_cmd.console)`).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pg2neo.cli.main import _context
from pg2neo.cli.main import console as out
from pg2neo.console.app import Backend, ConsoleApp
from pg2neo.console.security import generate_token, is_loopback
from pg2neo.console.server import serve_in_thread
from pg2neo.logs import event, get_logger
from pg2neo.runtime.service import Stopper

log = get_logger("console")


def configured_token(settings: Any) -> str | None:
    """`PG2NEO_CONSOLE__TOKEN` (settings group `console`, field `token`, a SecretStr), when set."""
    group = getattr(settings, "console", None)
    token = getattr(group, "token", None)
    if token is None:
        return None
    value = token.get_secret_value() if hasattr(token, "get_secret_value") else str(token)
    return value or None


def console(
    host: Annotated[
        str, typer.Option(help="Address to listen on. Beyond 127.0.0.1 / localhost an access token is required.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8089,
) -> None:
    """Serve the web console: status with charts, dead letters (retry, drop), conflicts (resolve), verify."""
    ctx = _context(check_installed=True)
    token = configured_token(ctx.settings)
    generated = False
    if token is None and not is_loopback(host):
        token, generated = generate_token(), True
    backend = Backend(
        ctx.connections.pg_dsn, ctx.driver, ctx.mapping, ctx.connections.neo4j_database, ctx.settings.apply
    )
    app = ConsoleApp(backend, host, token)
    stopper = Stopper()
    stopper.install()
    server, thread = serve_in_thread(app, host, port)
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{server.server_port}/"
    out.print(f"[green]pg2neo console[/] at {url}  (Ctrl-C stops it)", highlight=False)
    if generated:
        # Printed this once only; it is not logged. Set PG2NEO_CONSOLE__TOKEN to choose a lasting one.
        out.print(f"access token: {token}\n  open {url}?token={token}", highlight=False)
    event(log, "console_started", host=host, port=server.server_port, token_required=token is not None)
    try:
        stopper.event.wait()
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        app.close()
        ctx.close()
    event(log, "console_stopped", reason=stopper.reason)
