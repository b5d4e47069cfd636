"""`python -m pg2neo` runs the CLI."""

from pg2neo.cli.main import run

run()
