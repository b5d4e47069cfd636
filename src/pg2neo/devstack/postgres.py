"""The local PostgreSQL 15 cluster of the embedded stack: Debian's binaries, a cluster under the state folder.

Like the local Neo4j, the cluster has a generated password (`<root>/password`, mode 0600): TCP connections use
`scram-sha-256`, and the Unix socket admits only the account that runs the server (`peer`). A cluster made by an
earlier version trusted every local account; its first start by this version sets the password and the rules.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from pg2neo.devstack.process import chown_tree, port_is_free, run_as, service_user, tail
from pg2neo.errors import StackError

PG_MAJOR = 15
PG_BIN = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
INSTALL_HINT = (
    f"Install PostgreSQL {PG_MAJOR} from Debian's packages: "
    f"`apt-get update && apt-get install -y postgresql-{PG_MAJOR}` (make does this for you: `make deps`)."
)

SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "wal_level": "logical",
    "max_replication_slots": "16",
    "max_wal_senders": "16",
    "max_prepared_transactions": "64",
    "max_connections": "200",
    "fsync": "on",
    "log_min_messages": "warning",
    "logging_collector": "off",
    "password_encryption": "'scram-sha-256'",
}
HBA_HEADER = "# written by pg2neo dev: a password (scram-sha-256) for TCP, peer for the socket"
HBA_RULES = (
    "local   all          all                 peer",
    "host    all          all   127.0.0.1/32  scram-sha-256",
    "host    all          all   ::1/128       scram-sha-256",
    "local   replication  all                 peer",
    "host    replication  all   127.0.0.1/32  scram-sha-256",
    "host    replication  all   ::1/128       scram-sha-256",
)


@dataclass(frozen=True)
class LocalPostgres:
    root: Path
    port: int
    shared_buffers: str = "512MB"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    @property
    def hba_file(self) -> Path:
        return self.data_dir / "pg_hba.conf"

    @property
    def dsn_without_password(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        """The superuser's DSN with the generated password (without one for a cluster never started here)."""
        try:
            password = self.password_file.read_text().strip()
        except OSError:
            return self.dsn_without_password
        return f"postgresql://postgres:{password}@127.0.0.1:{self.port}/postgres"

    def _ensure_password(self) -> str:
        if not self.password_file.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            # Hex: nothing to percent-encode in a URI, nothing a command line reads as an option.
            self.password_file.write_text(secrets.token_hex(16) + "\n")
        self.password_file.chmod(0o600)
        return self.password_file.read_text().strip()

    def _secured(self) -> bool:
        try:
            return self.hba_file.read_text().startswith(HBA_HEADER)
        except OSError:
            return False

    def _write_hba(self) -> None:
        self.hba_file.write_text(HBA_HEADER + "\n" + "\n".join(HBA_RULES) + "\n")
        chown_tree(self.hba_file, service_user())

    def _bin(self, name: str) -> str:
        path = PG_BIN / name
        if not path.exists():
            raise StackError(f"{path} is missing. {INSTALL_HINT}")
        return str(path)

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        user = service_user()
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        _check_traversable(self.root, user)
        self._ensure_password()
        chown_tree(self.root, user)
        result = run_as(
            user,
            [
                self._bin("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                f"--pwfile={self.password_file}",
                "--auth-host=scram-sha-256",
                "--auth-local=peer",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
        )
        if result.returncode != 0:
            raise StackError(f"initdb failed for {self.data_dir}:\n{result.stderr.strip()}")
        self._write_hba()

    def write_config(self) -> None:
        settings = dict(SERVER_SETTINGS)
        settings["port"] = str(self.port)
        settings["shared_buffers"] = self.shared_buffers
        settings["unix_socket_directories"] = f"'{self.socket_dir}'"
        lines = [f"{key} = {value}" for key, value in settings.items()]
        conf = self.data_dir / "postgresql.auto.conf"
        conf.write_text("# written by pg2neo dev; edit settings through pg2neo, not here\n" + "\n".join(lines) + "\n")
        chown_tree(conf, service_user())

    def running(self) -> bool:
        if not self.initialised():
            return False
        return run_as(service_user(), [self._bin("pg_ctl"), "status", "-D", str(self.data_dir)]).returncode == 0

    def start(self, overrides: dict[str, str] | None = None) -> None:
        """Start the server (initialising it first if needed); `overrides` are `-c` settings for this start only."""
        if self.running():
            return
        if not port_is_free(self.port):
            raise StackError(
                f"port {self.port} for PostgreSQL is taken by another process; stop it, or remove "
                f"{self.root.parent / 'stack.json'} so that `pg2neo dev up` picks a free port"
            )
        if not self.initialised():
            self.init()
        self.write_config()
        secured = self._secured()
        user = service_user()
        result = run_as(
            user,
            [
                self._bin("pg_ctl"),
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                *(["-o", " ".join(f"-c {k}={v}" for k, v in overrides.items())] if overrides else []),
            ],
        )
        if result.returncode != 0:
            raise StackError(
                f"PostgreSQL did not start (pg_ctl exit {result.returncode}).\n{result.stderr.strip()}\n"
                f"--- {self.log_file} ---\n{tail(self.log_file)}"
            )
        self.wait_ready()
        if not secured:
            self._secure_trusting_cluster()

    def _secure_trusting_cluster(self) -> None:
        """A cluster made before passwords trusts every local account: give the superuser the password and
        switch the rules to it. Runs while the old rules still admit us, so no restart is needed."""
        password = self._ensure_password()
        with psycopg.connect(self.dsn_without_password, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(password)))
            self._write_hba()
            conn.execute("SELECT pg_reload_conf()")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.dsn, connect_timeout=3) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error as exc:
                last = exc
                time.sleep(0.2)
        raise StackError(f"PostgreSQL on port {self.port} did not accept connections within {timeout:.0f}s: {last}")

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            run_as(
                service_user(),
                [self._bin("pg_ctl"), "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data_dir)],
            )

    def kill(self) -> None:
        """SIGKILL the postmaster (fault tests); the next start recovers from the WAL."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            return
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)

    def version(self) -> str:
        result = run_as(None, [self._bin("postgres"), "--version"])
        return result.stdout.strip()


def _check_traversable(path: Path, user: str | None) -> None:
    if user is None:
        return
    result = run_as(user, ["test", "-x", str(path.resolve().parent)])
    if result.returncode != 0:
        raise StackError(
            f"the `{user}` account cannot reach {path}: a parent folder is not traversable. "
            f"Set PG2NEO_DEV__STATE_DIR to a folder under /tmp or /var/lib, or `chmod o+x` its parents."
        )
