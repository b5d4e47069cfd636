"""The local stack's PostgreSQL: reachable wherever the clone is, and closed to other accounts by a password.

Place in the data flow: before it — `pg2neo dev up` / `make demo`. Each test starts its own PostgreSQL cluster
(no Neo4j) in a temporary folder and stops it.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pg2neo.devstack.postgres import LocalPostgres
from pg2neo.devstack.process import chown_tree, free_port, run_as, service_user
from pg2neo.devstack.stack import LocalStack
from pg2neo.settings import DevSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def closed_folder() -> Iterator[Path]:
    """A folder like `mktemp -d` makes: mode 0700, so no other account can traverse it."""
    folder = Path(tempfile.mkdtemp(prefix="pg2neo-closed-"))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def refuses_without_password(pg: LocalPostgres, timeout: float = 15.0) -> bool:
    """True once a connection without the password is refused (a reload takes effect asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(pg.dsn_without_password, connect_timeout=3):
                pass
        except psycopg.OperationalError as exc:
            if "password" in str(exc):
                return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another account")
def test_a_clone_in_a_folder_postgres_cannot_traverse_still_gets_its_cluster(closed_folder: Path) -> None:
    state = closed_folder / "clone" / ".state"
    stack = LocalStack(DevSettings(state_dir=state, cache_dir=closed_folder / "cache"))
    home: Path | None = None
    try:
        stack.start_postgres()
        pg = stack.postgres
        home = pg.root
        assert (state / "postgres").is_symlink() and (state / "postgres").resolve() == home
        assert str(home).startswith("/var/lib/pg2neo/postgres-")
        assert run_as(service_user(), ["test", "-x", str(pg.data_dir)]).returncode == 0
        with psycopg.connect(stack.info().pg_dsn) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        assert stat.S_IMODE(pg.password_file.stat().st_mode) == 0o600
        assert refuses_without_password(pg)
        # A second stack object (the next command) finds the same cluster through the link.
        again = LocalStack(DevSettings(state_dir=state, cache_dir=closed_folder / "cache"))
        assert again.postgres.root == home and again.postgres.running()
        assert pg.password_file.read_text().strip() not in (state / "stack.json").read_text()
    finally:
        stack.postgres.stop()
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def open_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="pg2neo-open-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_cluster_made_before_passwords_is_secured_at_its_next_start(open_folder: Path) -> None:
    root = open_folder / "postgres"
    pg = LocalPostgres(root, free_port(), shared_buffers="32MB")
    user = service_user()
    root.mkdir()
    (root / "sock").mkdir()
    chown_tree(root, user)
    # What earlier versions made: a superuser without a password, trusted on every connection.
    made = run_as(
        user,
        [f"{pg._bin('initdb')}", "-D", str(pg.data_dir), "-U", "postgres", "--auth=trust", "--no-sync"],
    )
    assert made.returncode == 0, made.stderr
    assert not pg.password_file.exists()
    try:
        pg.start()
        assert pg.password_file.exists() and stat.S_IMODE(pg.password_file.stat().st_mode) == 0o600
        assert refuses_without_password(pg)
        with psycopg.connect(pg.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        pg.stop()
        pg.start()  # secured clusters start as they are
        with psycopg.connect(pg.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert refuses_without_password(pg, timeout=3)
    finally:
        pg.stop()
