"""`python -m pg2neo.console [--host H] [--port P]`: the console command without the `pg2neo` entry point."""

from __future__ import annotations

import sys

# Through the whole CLI (settings, logging, error handling), and so that `cli.main` is imported before the console
# command it registers.
from pg2neo.cli.main import app

if __name__ == "__main__":
    app(["console", *sys.argv[1:]], prog_name="pg2neo")
