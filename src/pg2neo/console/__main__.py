"""`python -m pg2neo.console [--host H] [--port P]`: the console command without the `pg2neo` entry point."""

from __future__ import annotations

import typer

from pg2neo.cli.console_cmd import console

if __name__ == "__main__":
    typer.run(console)
