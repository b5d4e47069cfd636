"""The `pg2neo` command line: `app` holds the typer app, its options and the one error handler; each `*_cmd`
module registers its commands on it; `main` imports them all and is the entry point."""
