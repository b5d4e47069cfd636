"""The local Neo4j 5.26 LTS Community server of the embedded stack, assembled from Maven Central jars.

Maven Central does not serve the server tarball, so the same server is run from its jars: `org.neo4j:neo4j`
(which holds `CommunityEntryPoint`, the entry point `bin/neo4j console` runs), `neo4j-bolt`, and APOC core with
its `apoc-common` companion, resolved by `mvn dependency:copy-dependencies` into a cache outside the repository.
`neo4j-admin` is `org.neo4j.cli.AdminTool` from `neo4j-command-line`; its `database import full` command comes
from `neo4j-import-tool`, both dependencies of `org.neo4j:neo4j`, so the same classpath runs them (`admin`).
"""

from __future__ import annotations

import importlib.resources
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pg2neo.devstack.process import pid_alive, port_is_free, read_pid, require_tool, stop_pid, tail
from pg2neo.errors import StackError

NEO4J_VERSION = "5.26.19"
APOC_VERSION = "5.26.19"
ARTIFACTS = (
    f"org.neo4j:neo4j:{NEO4J_VERSION}",
    f"org.neo4j:neo4j-bolt:{NEO4J_VERSION}",
    f"org.neo4j.procedure:apoc-core:{APOC_VERSION}",
    f"org.neo4j.procedure:apoc-common:{APOC_VERSION}",
)
JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+AlwaysPreTouch",
    "-XX:+UnlockExperimentalVMOptions",
    "-XX:+TrustFinalNonStaticFields",
    "-XX:+DisableExplicitGC",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Djdk.tls.ephemeralDHKeySize=2048",
    "-Dfile.encoding=UTF-8",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--enable-native-access=ALL-UNNAMED",
)


def fetch_jars(cache_dir: Path) -> Path:
    """Resolve the server jars into `cache_dir` once; later calls return the cached folder at once."""
    lib = cache_dir / f"neo4j-{NEO4J_VERSION}-apoc-{APOC_VERSION}" / "lib"
    marker = lib / ".complete"
    if marker.exists():
        return lib
    mvn = require_tool("mvn", "Install Maven: `apt-get install -y maven` (make does this for you: `make deps`).")
    work = lib.parent / "resolve"
    work.mkdir(parents=True, exist_ok=True)
    template = importlib.resources.files("pg2neo.devstack").joinpath("pom.xml").read_text()
    (work / "pom.xml").write_text(
        template.replace("@NEO4J_VERSION@", NEO4J_VERSION).replace("@APOC_VERSION@", APOC_VERSION)
    )
    staging = lib.parent / "lib.partial"
    shutil.rmtree(staging, ignore_errors=True)
    result = subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(work / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ],
        text=True,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            "could not fetch Neo4j from Maven Central ("
            + ", ".join(ARTIFACTS)
            + ").\n"
            + (result.stdout + result.stderr).strip()[-2000:]
            + "\nCheck that Maven Central is reachable, then retry `pg2neo dev up`; "
            f"a partial download is kept in ~/.m2 and {staging} is rebuilt."
        )
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)
    marker.write_text("\n".join(ARTIFACTS) + "\n")
    return lib


# Servers started by this process, kept so they are reaped (no zombies) and never collected while running.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait()


def new_password() -> str:
    """A random password that command lines cannot mistake for an option (token_urlsafe may start with '-')."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class LocalNeo4j:
    root: Path
    cache_dir: Path
    bolt_port: int
    heap: str = "1g"
    pagecache: str = "1g"

    @property
    def conf_dir(self) -> Path:
        return self.root / "conf"

    @property
    def pid_file(self) -> Path:
        return self.root / "run" / "neo4j.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "logs" / "console.log"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.bolt_port}"

    @property
    def password(self) -> str:
        if not self.password_file.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            self.password_file.write_text(new_password())
            self.password_file.chmod(0o600)
        return self.password_file.read_text().strip()

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        if java_home and (Path(java_home) / "bin" / "java").exists():
            return str(Path(java_home) / "bin" / "java")
        return require_tool("java", "Install Java 17: `apt-get install -y openjdk-17-jre-headless` (or `make deps`).")

    def _classpath(self, lib: Path) -> str:
        return f"{self.root / 'plugins'}/*:{self.conf_dir}/*:{lib}/*"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "NEO4J_HOME": str(self.root), "NEO4J_CONF": str(self.conf_dir)}

    def write_config(self, lib: Path) -> None:
        for sub in ("conf", "data", "logs", "run", "plugins", "import"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for jar in lib.glob("apoc-*.jar"):
            target = self.root / "plugins" / jar.name
            if not target.exists():
                shutil.copy2(jar, target)
        settings = {
            "server.default_listen_address": "127.0.0.1",
            "server.bolt.listen_address": f"127.0.0.1:{self.bolt_port}",
            "server.bolt.advertised_address": f"127.0.0.1:{self.bolt_port}",
            "server.http.enabled": "false",
            "server.https.enabled": "false",
            "server.memory.heap.initial_size": self.heap,
            "server.memory.heap.max_size": self.heap,
            "server.memory.pagecache.size": self.pagecache,
            "dbms.memory.transaction.total.max": "0",
            "dbms.security.auth_enabled": "true",
            "dbms.security.procedures.unrestricted": "apoc.*",
            "dbms.usage_report.enabled": "false",
            "server.directories.data": str(self.root / "data"),
            "server.directories.logs": str(self.root / "logs"),
            "server.directories.run": str(self.root / "run"),
            "server.directories.plugins": str(self.root / "plugins"),
            "server.directories.import": str(self.root / "import"),
            "db.tx_log.rotation.retention_policy": "1 files",
        }
        text = "".join(f"{key}={value}\n" for key, value in settings.items())
        (self.conf_dir / "neo4j.conf").write_text("# written by pg2neo dev\n" + text)

    def running_pid(self) -> int | None:
        pid = read_pid(self.pid_file)
        if pid is None:
            return None
        if pid_alive(pid):
            return pid
        # A pid file left by a crash (kill -9, machine restart): recover by forgetting it.
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(self, timeout: float = 120.0) -> None:
        if self.running_pid() is not None:
            self.wait_ready(timeout)
            return
        lib = fetch_jars(self.cache_dir)
        if not port_is_free(self.bolt_port):
            raise StackError(
                f"Bolt port {self.bolt_port} is taken by another process; stop it, or remove "
                f"{self.root.parent / 'stack.json'} so that `pg2neo dev up` picks a free port"
            )
        self.write_config(lib)
        java = self._java()
        if not any((self.root / "data" / "dbms").glob("auth*")):
            if self.password.startswith("-"):  # made by an earlier version; nothing uses it before this point
                self.password_file.write_text(new_password())
            result = subprocess.run(
                [
                    java,
                    "-cp",
                    self._classpath(lib),
                    "org.neo4j.cli.AdminTool",
                    "dbms",
                    "set-initial-password",
                    self.password,
                ],
                env=self._env(),
                text=True,
                capture_output=True,
                check=False,
            )
            if result.returncode != 0:
                raise StackError(f"could not set the Neo4j initial password:\n{result.stderr.strip()[-2000:]}")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                [
                    java,
                    f"-Xms{self.heap}",
                    f"-Xmx{self.heap}",
                    *JVM_FLAGS,
                    "-cp",
                    self._classpath(lib),
                    "org.neo4j.server.CommunityEntryPoint",
                    f"--home-dir={self.root}",
                    f"--config-dir={self.conf_dir}",
                    "--console-mode",
                ],
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        _CHILDREN[process.pid] = process
        self.pid_file.write_text(f"{process.pid}\n")
        self.wait_ready(timeout, process)

    def admin(self, args: list[str]) -> str:
        """Run `neo4j-admin <args>` on this server's home and configuration; returns its output."""
        lib = fetch_jars(self.cache_dir)
        if not any(lib.glob("neo4j-import-tool-*.jar")):
            raise StackError(f"the jar of `neo4j-admin database import` (neo4j-import-tool) is missing from {lib}")
        self.write_config(lib)
        result = subprocess.run(
            [self._java(), "-cp", self._classpath(lib), "org.neo4j.cli.AdminTool", *args],
            env=self._env(),
            text=True,
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(
                f"`neo4j-admin {' '.join(args[:3])}` failed (exit {result.returncode}):\n"
                + (result.stdout + result.stderr).strip()[-3000:]
            )
        return result.stdout

    def import_full(self, args: list[str], timeout: float = 300.0) -> str:
        """Stop the server, run `neo4j-admin <args>` (a `database import full`), start it again; returns the tool's
        output. The server is started again even when the import fails; if it cannot start on the store a failed
        import left, the import's own error is the one raised."""
        self.stop()
        try:
            output = self.admin(args)
        except StackError as failed:
            try:
                self.start(timeout)
            except StackError as not_started:
                raise StackError(
                    f"{failed}\n\nNeo4j did not start again on the database the failed import left ({not_started}). "
                    "Fix the cause above and run the bulk load again: it overwrites that database."
                ) from failed
            raise
        self.start(timeout)
        return output

    def wait_ready(self, timeout: float = 120.0, process: subprocess.Popen[bytes] | None = None) -> None:
        from neo4j import GraphDatabase
        from neo4j.exceptions import AuthError, DriverError, Neo4jError

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise StackError(
                    f"Neo4j exited with code {process.returncode} while starting.\n"
                    f"--- {self.log_file} ---\n{tail(self.log_file, 25)}"
                )
            try:
                with (
                    GraphDatabase.driver(self.uri, auth=("neo4j", self.password), connection_timeout=2) as driver,
                    driver.session() as session,
                ):  # auto-commit: no driver-side retry loop hiding the state
                    session.run("CALL dbms.components() YIELD name RETURN name").consume()
                return
            except AuthError as exc:
                raise StackError(
                    f"Neo4j at {self.uri} refused the password in {self.password_file}; the data folder was made "
                    f"with another password. Remove {self.root} (the local graph is derived data) and run again."
                ) from exc
            except (DriverError, Neo4jError, OSError) as exc:
                last = exc
                time.sleep(0.25)
        raise StackError(f"Neo4j did not answer on {self.uri} within {timeout:.0f}s ({last}).\n{tail(self.log_file)}")

    def stop(self) -> None:
        pid = self.running_pid()
        if pid is not None:
            stop_pid(pid, timeout=90)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the server (fault tests)."""
        pid = self.running_pid()
        if pid is None:
            return
        os.kill(pid, 9)
        _reap(pid)
        while pid_alive(pid):
            time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
