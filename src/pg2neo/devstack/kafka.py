"""The local Kafka of the scale-out path: one KRaft broker and one Kafka Connect worker with the Debezium plugin.

Everything comes from Maven Central, like the local Neo4j (`devstack/neo4j.py`): `kafka_2.13` and `connect-runtime`
(resolved by `mvn dependency:copy-dependencies` from `kafka-pom.xml`) and the Debezium PostgreSQL connector's plugin
tarball (`debezium-connector-postgres`, classifier `plugin`, type `tar.gz`: it carries the JDBC driver), unpacked
into a `plugin.path` folder. Both are cached beside the Neo4j jars (`DevSettings.cache_dir`, `~/.cache/pg2neo`).

The broker runs as a single KRaft node (`process.roles=broker,controller`, every replication factor 1); Connect runs
in distributed mode with one worker, the mode that scales to many. Ports are chosen once and remembered in
`<root>/ports.json`, so a server stopped (or killed) and started again comes back on the same ports with the same
data; each server has a pid file, and `up` starts only what is not running.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.resources
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pg2neo.devstack.process import free_port, pid_alive, port_is_free, read_pid, require_tool, stop_pid, tail
from pg2neo.errors import StackError

KAFKA_VERSION = "4.4.0"
SLF4J_VERSION = "2.0.17"
DEBEZIUM_VERSION = "3.7.0.Final"
POSTGRES_CONNECTOR = "io.debezium.connector.postgresql.PostgresConnector"
JVM_FLAGS = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
    "-Dfile.encoding=UTF-8",
    # slf4j-simple's log lines, with the time of each
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS",
)
SERVERS = ("broker", "connect")
# The ports of one LocalKafka: the broker's clients, its KRaft controller, Connect's REST API.
PORT_NAMES = ("broker", "controller", "connect")


def _maven(args: list[str], what: str) -> None:
    mvn = require_tool("mvn", "Install Maven: `apt-get install -y maven` (make does this for you: `make deps`).")
    result = subprocess.run([mvn, "-B", "-q", *args], text=True, capture_output=True, check=False)
    if result.returncode != 0:
        raise StackError(
            f"could not fetch {what} from Maven Central.\n"
            + (result.stdout + result.stderr).strip()[-2000:]
            + "\nCheck that Maven Central is reachable, then retry `pg2neo dev up --kafka`."
        )


def fetch_kafka_jars(cache_dir: Path) -> Path:
    """Resolve the Kafka broker and Connect jars into `cache_dir` once; later calls return the cached folder."""
    lib = cache_dir / f"kafka-{KAFKA_VERSION}" / "lib"
    marker = lib / ".complete"
    if marker.exists():
        return lib
    work = lib.parent / "resolve"
    work.mkdir(parents=True, exist_ok=True)
    template = importlib.resources.files("pg2neo.devstack").joinpath("kafka-pom.xml").read_text()
    (work / "pom.xml").write_text(
        template.replace("@KAFKA_VERSION@", KAFKA_VERSION).replace("@SLF4J_VERSION@", SLF4J_VERSION)
    )
    staging = lib.parent / "lib.partial"
    shutil.rmtree(staging, ignore_errors=True)
    _maven(
        ["-f", str(work / "pom.xml"), "dependency:copy-dependencies", f"-DoutputDirectory={staging}"],
        f"Apache Kafka {KAFKA_VERSION}",
    )
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)
    marker.write_text(f"kafka {KAFKA_VERSION}\n")
    return lib


def fetch_debezium_plugin(cache_dir: Path) -> Path:
    """Unpack the Debezium PostgreSQL connector plugin once; returns the `plugin.path` folder."""
    root = cache_dir / f"debezium-postgres-{DEBEZIUM_VERSION}"
    plugins = root / "plugins"
    if (plugins / ".complete").exists():
        return plugins
    download = root / "download"
    _maven(
        [
            "dependency:copy",
            f"-Dartifact=io.debezium:debezium-connector-postgres:{DEBEZIUM_VERSION}:tar.gz:plugin",
            f"-DoutputDirectory={download}",
        ],
        f"the Debezium PostgreSQL connector {DEBEZIUM_VERSION}",
    )
    staging = root / "plugins.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for archive in download.glob("*.tar.gz"):
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
    shutil.rmtree(plugins, ignore_errors=True)
    staging.rename(plugins)
    (plugins / ".complete").write_text(f"debezium-connector-postgres {DEBEZIUM_VERSION}\n")
    return plugins


def kafka_cluster_id() -> str:
    """A KRaft cluster id as `StorageTool random-uuid` prints it (URL-safe base64 of 16 random bytes); like Kafka's
    own, never one starting with `-`, which the command line would take for an option."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


@dataclass(frozen=True)
class KafkaInfo:
    bootstrap_servers: str
    connect_url: str


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return require_tool("java", "Install Java 17: `apt-get install -y openjdk-17-jre-headless` (or `make deps`).")


def java_available() -> bool:
    """Whether a Java runtime is there to run Kafka (the tests skip without one)."""
    java_home = os.environ.get("JAVA_HOME")
    return bool(java_home and (Path(java_home) / "bin" / "java").exists()) or shutil.which("java") is not None


# Servers started by this process, kept so they are reaped (no zombies) and never collected while running.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait()


def _get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class LocalKafka:
    """One KRaft broker and one distributed Kafka Connect worker under `root` (e.g. `<state>/kafka`), with the
    jars and the Debezium plugin cached in `cache_dir`."""

    def __init__(
        self,
        root: Path,
        cache_dir: Path,
        partitions: int = 3,
        broker_heap: str = "384m",
        connect_heap: str = "512m",
    ) -> None:
        self.root = root.resolve()
        self.cache_dir = cache_dir
        self.partitions = partitions
        self.broker_heap = broker_heap
        self.connect_heap = connect_heap
        self.ports = self._load_ports()

    # -- layout -------------------------------------------------------------------------------------------------
    @property
    def ports_file(self) -> Path:
        return self.root / "ports.json"

    def pid_file(self, server: str) -> Path:
        return self.root / "run" / f"{server}.pid"

    def log_file(self, server: str) -> Path:
        return self.root / "logs" / f"{server}.log"

    @property
    def broker_data(self) -> Path:
        return self.root / "broker" / "data"

    def _load_ports(self) -> dict[str, int]:
        try:
            data: dict[str, Any] = json.loads(self.ports_file.read_text())
            return {name: int(data[name]) for name in PORT_NAMES}
        except (OSError, ValueError, KeyError):
            return {}

    def _port_ready(self, name: str, server: str) -> bool:
        """Whether the remembered port `name` can be used by `server` (running already, or the port is free after
        at most a few seconds: a server just stopped may still hold it)."""
        if self.running_pid(server) is not None:
            return True
        deadline = time.monotonic() + 10
        while not port_is_free(self.ports[name]):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.25)
        return True

    def _choose_ports(self, server: str) -> None:
        """Ports are chosen once and kept. A client port (broker, Connect) found taken by a foreign process is
        replaced; the controller's is written into the KRaft log at format time, so it is never moved."""
        ports = dict(self.ports)
        for name in PORT_NAMES:
            if name not in ports:
                taken = set(ports.values())
                port = free_port()
                while port in taken:
                    port = free_port()
                ports[name] = port
        self.ports = ports
        for name in ("broker", "controller") if server == "broker" else ("connect",):
            if self._port_ready(name, server):
                continue
            if name == "controller" and (self.broker_data / "meta.properties").exists():
                raise StackError(
                    f"the Kafka controller port {self.ports[name]} is taken by another process, and the broker's "
                    f"log under {self.broker_data} was formatted for it: stop that process, or remove {self.root} "
                    "to start a new, empty Kafka"
                )
            taken = set(self.ports.values())
            port = free_port()
            while port in taken:
                port = free_port()
            self.ports[name] = port
        self.root.mkdir(parents=True, exist_ok=True)
        self.ports_file.write_text(json.dumps(self.ports, indent=2) + "\n")

    def info(self) -> KafkaInfo:
        if not self.ports:
            raise StackError(f"the local Kafka under {self.root} was never started: run `pg2neo dev up --kafka`")
        return KafkaInfo(
            bootstrap_servers=f"127.0.0.1:{self.ports['broker']}",
            connect_url=f"http://127.0.0.1:{self.ports['connect']}",
        )

    # -- configuration ------------------------------------------------------------------------------------------
    def _broker_properties(self) -> dict[str, str]:
        broker, controller = self.ports["broker"], self.ports["controller"]
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller}",
            "listeners": f"PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.broker_data),
            # Debezium's topics are created on first use with this many partitions: more than one, so that
            # several sink workers share a table's events (per-key order holds: events are keyed by the row key).
            "num.partitions": str(self.partitions),
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "min.insync.replicas": "1",
            "default.replication.factor": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }

    def _connect_properties(self, plugins: Path) -> dict[str, str]:
        return {
            "bootstrap.servers": f"127.0.0.1:{self.ports['broker']}",
            "group.id": "pg2neo-connect",
            "listeners": f"http://127.0.0.1:{self.ports['connect']}",
            "rest.advertised.host.name": "127.0.0.1",
            "rest.advertised.port": str(self.ports["connect"]),
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "config.storage.topic": "_pg2neo_connect_configs",
            "offset.storage.topic": "_pg2neo_connect_offsets",
            "status.storage.topic": "_pg2neo_connect_status",
            "config.storage.replication.factor": "1",
            "offset.storage.replication.factor": "1",
            "offset.storage.partitions": "5",
            "status.storage.replication.factor": "1",
            "status.storage.partitions": "1",
            # The source offset (the LSN Debezium confirms to the slot) is flushed every second: after a Connect
            # restart fewer events are sent twice (the sink's version guard makes the duplicates harmless).
            "offset.flush.interval.ms": "1000",
            # One worker: a restarted worker takes its connectors back at once instead of waiting (5 min by
            # default) for the worker that left to come back.
            "scheduled.rebalance.max.delay.ms": "0",
            "plugin.path": str(plugins),
            "plugin.discovery": "only_scan",
            "topic.creation.enable": "true",
            # Connector configs may name secrets instead of holding them: `${env:VAR}` or `${file:/path:key}`
            # (`pg2neo kafka register --password-ref`).
            "config.providers": "env,file",
            "config.providers.env.class": "org.apache.kafka.common.config.provider.EnvVarConfigProvider",
            "config.providers.file.class": "org.apache.kafka.common.config.provider.FileConfigProvider",
        }

    @staticmethod
    def _write_properties(path: Path, props: dict[str, str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# written by pg2neo\n" + "".join(f"{k}={v}\n" for k, v in props.items()))

    # -- processes ----------------------------------------------------------------------------------------------
    def running_pid(self, server: str) -> int | None:
        pid = read_pid(self.pid_file(server))
        if pid is None:
            return None
        if pid_alive(pid):
            return pid
        _reap(pid)
        self.pid_file(server).unlink(missing_ok=True)  # left by a crash or a kill: forget it
        return None

    def _spawn(self, server: str, heap: str, main: str, args: list[str], lib: Path) -> subprocess.Popen[bytes]:
        log = self.log_file(server)
        log.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file(server).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [_java(), f"-Xmx{heap}", f"-Xms{heap}", *JVM_FLAGS, "-cp", f"{lib}/*", main, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "LOG_DIR": str(log.parent)},
            )
        _CHILDREN[process.pid] = process
        self.pid_file(server).write_text(f"{process.pid}\n")
        return process

    def up(self, timeout: float = 120.0) -> dict[str, float]:
        """Start the broker and the Connect worker (each only if not running); returns seconds each took."""
        fetch_kafka_jars(self.cache_dir)
        fetch_debezium_plugin(self.cache_dir)
        timings: dict[str, float] = {}
        started = time.monotonic()
        self.start_broker(timeout)
        timings["broker"] = time.monotonic() - started
        started = time.monotonic()
        self.start_connect(timeout)
        timings["connect"] = time.monotonic() - started
        return timings

    def start_broker(self, timeout: float = 120.0) -> None:
        """Start the broker if it is not running (same ports, same data as before) and wait until it answers."""
        lib = fetch_kafka_jars(self.cache_dir)
        self._choose_ports("broker")
        process = None
        if self.running_pid("broker") is None:
            config = self.root / "broker" / "server.properties"
            self._write_properties(config, self._broker_properties())
            if not (self.broker_data / "meta.properties").exists():
                self._format(lib, config)
            process = self._spawn("broker", self.broker_heap, "kafka.Kafka", [str(config)], lib)
        self._wait_broker(timeout, process)

    def _format(self, lib: Path, config: Path) -> None:
        command = [_java(), "-Xmx128m", *JVM_FLAGS, "-cp", f"{lib}/*", "kafka.tools.StorageTool", "format"]
        command += ["--standalone", "-t", kafka_cluster_id(), "-c", str(config)]
        result = subprocess.run(command, text=True, capture_output=True, check=False)
        if result.returncode != 0:
            raise StackError(f"could not format the Kafka log folder:\n{(result.stdout + result.stderr)[-2000:]}")

    def start_connect(self, timeout: float = 120.0) -> None:
        """Start the Connect worker if it is not running and wait until its REST API lists the Debezium plugin."""
        lib = fetch_kafka_jars(self.cache_dir)
        plugins = fetch_debezium_plugin(self.cache_dir)
        if "broker" not in self.ports:
            raise StackError("start the Kafka broker before Kafka Connect")
        self._choose_ports("connect")
        process = None
        if self.running_pid("connect") is None:
            config = self.root / "connect" / "worker.properties"
            self._write_properties(config, self._connect_properties(plugins))
            process = self._spawn(
                "connect", self.connect_heap, "org.apache.kafka.connect.cli.ConnectDistributed", [str(config)], lib
            )
        self._wait_connect(timeout, process)

    def _wait_broker(self, timeout: float, process: subprocess.Popen[bytes] | None) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        # Texts, not exceptions: a kept exception keeps its traceback's sockets open (ResourceWarning).
        last: str | None = None
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise StackError(
                    f"the Kafka broker exited with code {process.returncode} while starting.\n"
                    f"--- {self.log_file('broker')} ---\n{tail(self.log_file('broker'), 25)}"
                )
            if not port_is_free(self.ports["broker"]):
                try:
                    admin = AdminClient({"bootstrap.servers": self.info().bootstrap_servers, "log_level": 0})
                    metadata = admin.list_topics(timeout=2)
                    if metadata.brokers:
                        return
                except Exception as exc:  # not ready yet: KafkaException, timeouts
                    last = str(exc)
            time.sleep(0.25)
        raise StackError(
            f"the Kafka broker did not answer on {self.info().bootstrap_servers} within {timeout:.0f}s ({last}).\n"
            f"{tail(self.log_file('broker'))}"
        )

    def _wait_connect(self, timeout: float, process: subprocess.Popen[bytes] | None) -> None:
        deadline = time.monotonic() + timeout
        last: str | None = None
        url = f"{self.info().connect_url}/connector-plugins"
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise StackError(
                    f"Kafka Connect exited with code {process.returncode} while starting.\n"
                    f"--- {self.log_file('connect')} ---\n{tail(self.log_file('connect'), 25)}"
                )
            try:
                plugins = _get_json(url)
                if any(p.get("class") == POSTGRES_CONNECTOR for p in plugins):
                    return
                last = "the Debezium PostgreSQL connector is not among its plugins"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.5)
        raise StackError(
            f"Kafka Connect did not answer on {url} within {timeout:.0f}s ({last}).\n{tail(self.log_file('connect'))}"
        )

    def _stop(self, server: str, kill: bool) -> None:
        pid = self.running_pid(server)
        if pid is not None:
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 30
                while pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
            else:
                stop_pid(pid, timeout=60)
            _reap(pid)
        self.pid_file(server).unlink(missing_ok=True)

    def stop_broker(self, kill: bool = False) -> None:
        """Stop the broker: SIGTERM (a clean shutdown), or SIGKILL with `kill=True`; its ports and data stay."""
        self._stop("broker", kill)

    def stop_connect(self, kill: bool = False) -> None:
        """Stop the Connect worker: SIGTERM (it flushes its source offsets first), or SIGKILL with `kill=True`."""
        self._stop("connect", kill)

    def down(self) -> None:
        """Stop Connect first (it flushes its source offsets to the broker), then the broker."""
        self.stop_connect()
        self.stop_broker()

    def connectors(self) -> dict[str, Any]:
        """The connectors of the running Connect worker with their states (`GET /connectors?expand=status`)."""
        answer: dict[str, Any] = _get_json(f"{self.info().connect_url}/connectors?expand=status", timeout=5)
        return {
            name: {
                "state": item["status"]["connector"]["state"],
                "tasks": [task["state"] for task in item["status"].get("tasks", [])],
            }
            for name, item in answer.items()
        }

    def status(self) -> dict[str, Any]:
        plugin = (self.cache_dir / f"debezium-postgres-{DEBEZIUM_VERSION}" / "plugins" / ".complete").exists()
        out: dict[str, Any] = {
            "root": str(self.root),
            "kafka": KAFKA_VERSION,
            "debezium": DEBEZIUM_VERSION if plugin else None,
        }
        for server in SERVERS:
            pid = self.running_pid(server)
            out[server] = {"up": pid is not None, "pid": pid, "log": str(self.log_file(server))}
        if self.ports:
            info = self.info()
            out["broker"].update(port=self.ports["broker"], bootstrap_servers=info.bootstrap_servers)
            out["connect"].update(port=self.ports["connect"], url=info.connect_url)
            if out["connect"]["up"]:
                try:
                    out["connect"]["connectors"] = self.connectors()
                except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
                    out["connect"]["connectors"] = f"not answering ({exc})"
        return out
