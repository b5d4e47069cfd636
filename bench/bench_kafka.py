"""Benchmark 6: trigger mode against the scale-out path (Debezium -> Kafka -> `pg2neo sink`, 1 and 2 workers).

One run, one database, the same pgbench workload for every mode:
- write-path cost: bench_write_cost's update-heavy script, no rate limit, rounds alternating "none" (no capture),
  "triggers" (`install.init`) and "debezium" (the connector streaming the WAL to Kafka; stopped through Connect's
  REST API in the other rounds and given time to catch up before its round). No consumer runs in any round, so
  each figure is the capture's own cost on the PostgreSQL machine (on this one machine that includes the CPU the
  Connect JVM takes from PostgreSQL: there is nowhere else for it to run). Headline: median of the per-round-set
  TPS ratios against "none".
- live sync: bench_live's seven one-statement scripts at stepped `pgbench -R` rates, (a) with `pg2neo run` (trigger
  mode, the baseline), then (b) with one and (c) with two `pg2neo sink run` processes in one consumer group. The
  same probe as bench_live for every mode: a thread updates a tenant's name every 100 ms and remembers the commit
  time; a poller reads the node in Neo4j every 20 ms; lag = commit -> first poll that sees the value. The backlog:
  trigger mode's queue depth; the sink's events on the mapped topics not yet applied (partition end offsets minus
  the offsets the sink's checkpoints in Neo4j hold), sampled every second. A step is bounded when the backlog
  drained after the writer, no probe was lost, the backlog at the end of the writer was at most
  max(1000, 2 s of input), and the p99 lag stayed under 5 s (bench_live's rule). Rates step up until one is not
  bounded. Before the sink's steps Debezium snapshots the database and worker 1 applies it; worker 2 joins the same
  group (a rebalance) before the two-worker steps.
- resources per step: CPU seconds per second (utime+stime from /proc/<pid>/stat) of the Neo4j, broker and Connect
  JVMs and of pg2neo's processes; RSS of pg2neo's processes sampled every second, and their lifetime peak (VmHWM).

Kafka: a LocalKafka (one KRaft broker, one distributed Connect worker with the Debezium plugin, 3 partitions per
topic) in its own folder under /tmp, removed at the end; the connector's slot is dropped at the end.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from neo4j import Driver
from psycopg import sql

from bench.bench_live import (
    SCRIPTS as LIVE_SCRIPTS,
)
from bench.bench_live import (
    Probe,
    Service,
    id_bounds,
    parse_pgbench,
    pgbench_conn_args,
    pgbench_env,
    run_rate,
    wait_drained,
    write_scripts,
)
from bench.bench_write_cost import SCRIPTS as WRITE_SCRIPTS
from bench.bench_write_cost import _round as write_round
from bench.common import (
    Bench,
    chart_path,
    drop_graph_schema,
    load,
    log,
    median,
    percentile,
    pgbench_path,
    pipeline,
    wipe_graph,
    write_result,
)
from pg2neo.apply.cypher import SINK_CHECKPOINTS
from pg2neo.apply.writer import GraphWriter
from pg2neo.demo.flow import mapping_path
from pg2neo.demo.generate import generate, load_schema, row_counts
from pg2neo.devstack.kafka import LocalKafka
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.reconcile.verify import verify
from pg2neo.runtime import install
from pg2neo.runtime.service import Stopper, run_snapshot
from pg2neo.settings import DevSettings
from pg2neo.transport.debezium import ConnectorNames, topic_of
from pg2neo.transport.sink_status import sink_status

DB = "bench_kafka"
NAMES = ConnectorNames("bench_kafka")  # connector, slot, publication and topic prefix
GROUP = "bench-kafka-sink"
DEAD_LETTERS = "bench-kafka-dlq"
PARTITIONS = 3
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- /proc readings -------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process, in seconds (None when it is gone)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5), counted after the name


def memory_mb(pid: int | None, field: str) -> float | None:
    """VmRSS or VmHWM (the peak RSS of the process's life) from /proc/<pid>/status, in MB."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Resources(threading.Thread):
    """CPU per second of named processes over a step, and the highest RSS of pg2neo's processes (every second)."""

    def __init__(self, jvms: dict[str, int | None], ours: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.jvms, self.ours = jvms, ours
        self.stop = threading.Event()
        self.rss_max: dict[str, float] = {}
        self._cpu0 = {name: cpu_seconds(pid) for name, pid in {**jvms, **ours}.items()}
        self._t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop.is_set():
            for name, pid in self.ours.items():
                rss = memory_mb(pid, "VmRSS")
                if rss is not None:
                    self.rss_max[name] = max(rss, self.rss_max.get(name, 0.0))
            self.stop.wait(1.0)

    def finish(self) -> dict[str, Any]:
        self.stop.set()
        self.join()
        span = time.monotonic() - self._t0
        cpu: dict[str, float | None] = {}
        for name, pid in {**self.jvms, **self.ours}.items():
            before, after = self._cpu0[name], cpu_seconds(pid)
            cpu[name] = None if before is None or after is None else round((after - before) / span, 3)
        return {
            "cpu_cores": cpu,  # CPU seconds per second over the step (1.0 = one core busy)
            "jvm_cpu_cores_total": round(sum(cpu[n] or 0.0 for n in self.jvms), 3),
            "pg2neo_cpu_cores_total": round(sum(cpu[n] or 0.0 for n in self.ours), 3),
            "pg2neo_rss_mb_max": {k: round(v, 1) for k, v in self.rss_max.items()},
        }


# -- Kafka: the connector, the sink workers, the backlog ------------------------------------------------------------


def _rest(method: str, url: str, timeout: float = 30.0) -> Any:
    request = urllib.request.Request(url, method=method, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


def connector_state(connect_url: str) -> str:
    status = _rest("GET", f"{connect_url}/connectors/{NAMES.name}/status", timeout=10)
    states = {status["connector"]["state"], *(t["state"] for t in status.get("tasks", []))}
    return "RUNNING" if states == {"RUNNING"} and status.get("tasks") else "/".join(sorted(states))


def set_connector(connect_url: str, running: bool, timeout: float = 120.0) -> None:
    """Stop the connector (its task closes the replication connection; the slot keeps the WAL) or resume it."""
    _rest("PUT", f"{connect_url}/connectors/{NAMES.name}/{'resume' if running else 'stop'}")
    wanted = "RUNNING" if running else "STOPPED"
    deadline = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < deadline:
        with contextlib.suppress(urllib.error.URLError, OSError, KeyError, ValueError):
            state = connector_state(connect_url)
            if state == wanted:
                return
        time.sleep(0.5)
    raise RuntimeError(f"connector {NAMES.name} is {state}, not {wanted}, after {timeout:.0f}s")


def drop_slot(admin_dsn: str) -> None:
    """Drop the connector's slot once no walsender holds it (a left-over slot would also block DROP DATABASE)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE slot_name = %s AND active_pid IS NOT NULL",
                (NAMES.slot,),
            )
            try:
                conn.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                    (NAMES.slot,),
                )
                return
            except psycopg.errors.ObjectInUse:
                time.sleep(0.5)


class Backlog:
    """Events on the mapped topics and how many of them the sink has applied (its checkpoints in Neo4j)."""

    def __init__(self, bootstrap_servers: str, driver: Driver, mapping: Mapping) -> None:
        from confluent_kafka import Consumer

        self.driver = driver
        self.topics = [topic_of(NAMES, e.table) for e in mapping.entries]
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap_servers, "group.id": "bench-kafka-backlog", "log_level": 0}
        )

    def sample(self) -> tuple[float, int, int]:
        """(time, events produced, events applied) summed over every partition of the mapped topics."""
        from confluent_kafka import TopicPartition

        produced = 0
        # Fresh metadata every time: a client that once found a topic missing keeps failing on it otherwise.
        existing = self.consumer.list_topics(timeout=10).topics
        for topic in self.topics:
            if topic not in existing:
                continue  # Debezium has not created it yet
            for partition in existing[topic].partitions:
                produced += self.consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        prefix = f"kafka:{GROUP}:"
        records, _, _ = self.driver.execute_query(SINK_CHECKPOINTS, prefix=prefix)
        applied = sum(
            int(r["next"]) for r in records if str(r["name"])[len(prefix) :].rpartition(":")[0] in self.topics
        )
        return time.time(), produced, applied

    def waiting(self) -> int:
        _, produced, applied = self.sample()
        return produced - applied

    def wait_drained(self, timeout: float, settle: float = 0.0) -> float | None:
        """Seconds until every produced event was applied (and, with `settle`, nothing new came for that long)."""
        started = time.monotonic()
        last: tuple[int, float] | None = None
        while time.monotonic() - started < timeout:
            _, produced, applied = self.sample()
            if produced == applied:
                if last is None or last[0] != produced:
                    last = (produced, time.monotonic())
                if time.monotonic() - last[1] >= settle:
                    return time.monotonic() - started
            else:
                last = None
            time.sleep(0.2)
        return None

    def wait_produced_stable(self, timeout: float, quiet: float = 3.0) -> float | None:
        """Seconds until the topics stop growing for `quiet` seconds (Debezium caught up with the slot)."""
        started = time.monotonic()
        last, since = -1, time.monotonic()
        while time.monotonic() - started < timeout:
            _, produced, _ = self.sample()
            if produced != last:
                last, since = produced, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return time.monotonic() - started
            time.sleep(0.5)
        return None

    def close(self) -> None:
        self.consumer.close()


class BacklogSampler(threading.Thread):
    def __init__(self, backlog: Backlog) -> None:
        super().__init__(daemon=True)
        self.backlog = backlog
        self.samples: list[tuple[float, int, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                self.samples.append(self.backlog.sample())
            self.stop.wait(1.0)


class Workers:
    """`pg2neo sink run` processes of one consumer group."""

    def __init__(self, bench: Bench, dsn: str, bootstrap_servers: str) -> None:
        self.bench, self.dsn, self.servers = bench, dsn, bootstrap_servers
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs = Path(tempfile.mkdtemp(prefix="pg2neo-bench-sink-"))

    def start(self) -> subprocess.Popen[bytes]:
        n = len(self.processes) + 1
        command = self.bench.service_command(
            "--mapping", str(mapping_path()), "sink", "run", "--bootstrap-servers", self.servers,
            "--group", GROUP, "--name", NAMES.name, "--dead-letter-topic", DEAD_LETTERS,
        )  # fmt: skip
        with open(self.logs / f"worker{n}.log", "ab") as out:
            process = subprocess.Popen(
                command, env=self.bench.service_env(self.dsn), stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        self.processes.append(process)
        return process

    def pids(self) -> dict[str, int]:
        return {f"sink_worker_{i + 1}": p.pid for i, p in enumerate(self.processes)}

    def check_alive(self) -> None:
        for i, p in enumerate(self.processes):
            if p.poll() is not None:
                tail = (self.logs / f"worker{i + 1}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"sink worker {i + 1} exited with {p.returncode}:\n{tail}")

    def peaks(self) -> dict[str, float | None]:
        return {name: memory_mb(pid, "VmHWM") for name, pid in self.pids().items()}

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.logs, ignore_errors=True)


def create_topic(bootstrap_servers: str, topic: str) -> None:
    """The dead-letter topic, made before the workers start (`sink_status` fails while it does not exist)."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        with contextlib.suppress(Exception):  # it exists already
            future.result(timeout=30)


def wait_members(bootstrap_servers: str, driver: Driver, count: int, timeout: float = 120.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception):
            if sink_status(bootstrap_servers, GROUP, DEAD_LETTERS, driver)["workers"] == count:
                return time.monotonic() - started
        time.sleep(1.0)
    raise RuntimeError(f"the sink group {GROUP} did not reach {count} workers within {timeout:.0f}s")


# -- one live step of the sink (bench_live.run_rate's twin, with the Kafka backlog instead of the queue) --------------


def pgbench_command(dsn: str, rate: int, seconds: int, scripts: list[str]) -> list[str]:
    """The command bench_live.run_rate runs: same clients, threads, scripts and id bounds."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        bounds = id_bounds(conn)
    defines = [a for k, v in bounds.items() for a in ("-D", f"{k}={v}")]
    clients = max(4, min(16, rate // 250))
    return [pgbench_path(), "-n", "-c", str(clients), "-j", "2", "-R", str(rate), "-T", str(seconds), *defines,
            *scripts, *pgbench_conn_args(dsn)]  # fmt: skip


def run_rate_sink(
    bench: Bench, dsn: str, probe: Probe, backlog: Backlog, scripts: list[str], rate: int, seconds: int
) -> dict[str, Any]:
    command = pgbench_command(dsn, rate, seconds, scripts)
    sampler = BacklogSampler(backlog)
    sampler.start()
    before = backlog.wait_drained(120.0)  # like bench_live's runs: start on a drained backlog
    first_probe = probe.counter + 1
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True, env=pgbench_env(dsn), check=False)
    ended = time.time()
    last_probe = probe.counter
    drained = backlog.wait_drained(30.0 if bench.quick else 120.0)
    time.sleep(0.3)  # let the poller see the last probe values
    sampler.stop.set()
    sampler.join()
    stats: dict[str, Any] = parse_pgbench(result.stdout)
    if result.returncode != 0:
        stats.update(returncode=result.returncode, stderr_tail=result.stderr[-800:])
    lags, missing = probe.lags(first_probe, last_probe)
    lag_values = [lag for _, lag in lags]
    window = [s for s in sampler.samples if started <= s[0] <= ended + 1.0]
    if len(window) >= 2:
        span = window[-1][0] - window[0][0]
        produced_rate = (window[-1][1] - window[0][1]) / span
        applied_rate = (window[-1][2] - window[0][2]) / span
        tail = [s[1] - s[2] for s in window[len(window) // 2 :]]
    else:
        produced_rate = applied_rate = float("nan")
        tail = []
    end_backlog = median(tail[-5:]) if tail else 0.0
    bounded = (
        drained is not None
        and missing == 0
        and end_backlog <= max(1000.0, 2 * produced_rate)
        and percentile(lag_values, 99) < 5.0
    )
    return {
        "offered_tx_per_s": rate,
        "seconds": seconds,
        "clients": int(command[command.index("-c") + 1]),
        "pgbench": stats,
        "events_produced_per_s": produced_rate,
        "events_applied_per_s": applied_rate,
        "backlog_max": max((s[1] - s[2] for s in window), default=0),
        "backlog_end": end_backlog,
        "drain_seconds_before": before,
        "drain_seconds_after_writer": drained,
        "lag_s": _lag_figures(lag_values, missing),
        "bounded": bounded,
        "lag_series": [(round(t - started, 2), round(lag, 4)) for t, lag in lags],
    }


def _lag_figures(values: list[float], missing: int) -> dict[str, Any]:
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values, default=float("nan")),
        "probes": len(values),
        "never_seen": missing,
    }


def step_rates(
    rates: list[int], one: Callable[[int], dict[str, Any]], resources: Callable[[], Resources], mode: str
) -> list[dict[str, Any]]:
    """Run `one(rate)` for each rate, with resource readings, until a rate is not bounded."""
    steps = []
    for rate in rates:
        watch = resources()
        watch.start()
        step = one(rate)
        step["resources"] = watch.finish()
        steps.append(step)
        lag = step["lag_s"]
        applied = step.get("row_changes_applied_per_s", step.get("events_applied_per_s", float("nan")))
        log(
            f"kafka bench {mode} {rate}/s: applied {applied:,.0f}/s, lag p50 {lag['p50']:.3f}s p99 "
            f"{lag['p99']:.3f}s, bounded={step['bounded']}, JVM CPU {step['resources']['jvm_cpu_cores_total']:.2f} "
            f"cores"
        )
        if not step["bounded"]:
            break
    return steps


# -- the phases -----------------------------------------------------------------------------------------------------


def trigger_phase(
    bench: Bench, dsn: str, tenant_id: str, scripts: list[str], rates: list[int], seconds: int, jvms: dict[str, Any]
) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn, bench.driver() as driver:
        mapping = load_mapping(mapping_path(), conn)
        wipe_graph(driver)
        drop_graph_schema(driver)
        install.init(conn, driver, mapping)
        t0 = time.monotonic()
        with pipeline(dsn, driver, mapping) as synced:
            run_snapshot(synced.engine(), Stopper(), lambda t, r: None)
        snapshot_s = time.monotonic() - t0
    log(f"kafka bench: trigger mode snapshot in {snapshot_s:.1f}s")
    service = Service(bench, dsn)
    probe = Probe(dsn, bench, tenant_id)
    threads = probe.start()
    try:
        ready = wait_applying(probe)
        log(f"kafka bench: pg2neo run applies changes ({ready:.1f}s after start)")
        run_rate(bench, dsn, probe, scripts, rates[0], seconds // 2)  # warm-up, not counted
        wait_drained(dsn, 60)
        ours = {"pg2neo_run": service.process.pid}
        steps = step_rates(
            rates,
            lambda rate: _no_series(run_rate(bench, dsn, probe, scripts, rate, seconds)),
            lambda: Resources(jvms, ours),
            "trigger",
        )
        peak = memory_mb(service.process.pid, "VmHWM")
    finally:
        probe.stop.set()
        for t in threads:
            t.join(timeout=5)
        service.stop()
    with psycopg.connect(dsn, autocommit=True) as conn:
        install.uninstall(conn)
    return {"snapshot_seconds": snapshot_s, "steps": steps, "peak_rss_mb": {"pg2neo_run": peak}}


def wait_applying(probe: Probe, timeout: float = 300.0) -> float:
    """Seconds until a probe value is seen in Neo4j: the consumer has started (slow on a loaded machine)."""
    started, first = time.monotonic(), probe.counter
    while time.monotonic() - started < timeout:
        if max(probe.visible, default=0) > first:
            return time.monotonic() - started
        time.sleep(0.1)
    raise RuntimeError(f"no probe value reached Neo4j within {timeout:.0f}s: is the consumer running?")


def _no_series(step: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in step.items() if not k.endswith("_series")}


def sink_phase(
    bench: Bench,
    dsn: str,
    kafka: LocalKafka,
    tenant_id: str,
    scripts: list[str],
    rates: list[int],
    seconds: int,
    jvms: dict[str, Any],
) -> dict[str, Any]:
    info = kafka.info()
    with psycopg.connect(dsn, autocommit=True) as conn:
        mapping = load_mapping(mapping_path(), conn)
    out: dict[str, Any] = {}
    with bench.driver() as driver:
        wipe_graph(driver)
        drop_graph_schema(driver)
        GraphWriter(driver, mapping, awaiting=True, claim_epoch=False).ensure_schema()
        env = bench.service_env(dsn)
        t0 = time.monotonic()
        registered = subprocess.run(
            bench.service_command("--mapping", str(mapping_path()), "kafka", "register", "--connect-url",
                                  info.connect_url, "--name", NAMES.name),
            env=env, capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        if registered.returncode != 0:
            raise RuntimeError(f"pg2neo kafka register failed:\n{registered.stdout}{registered.stderr}")
        create_topic(info.bootstrap_servers, DEAD_LETTERS)
        workers = Workers(bench, dsn, info.bootstrap_servers)
        backlog = Backlog(info.bootstrap_servers, driver, mapping)
        probe = Probe(dsn, bench, tenant_id)
        # Go on from the trigger phase's last probe value: an older number in the graph would count as seen.
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SELECT name FROM tenants WHERE id = %s", (tenant_id,)).fetchone()
        if row and str(row[0]).startswith("probe-"):
            probe.counter = int(str(row[0])[6:])
        threads: list[threading.Thread] = []
        try:
            workers.start()
            # The snapshot: Debezium reads every mapped row, worker 1 applies them all.
            backlog.wait_produced_stable(300, quiet=3.0)
            drained = backlog.wait_drained(900)
            workers.check_alive()
            out["snapshot_seconds"] = time.monotonic() - t0
            out["snapshot_drained"] = drained is not None
            out["snapshot_events"] = backlog.sample()[1]
            log(f"kafka bench: Debezium snapshot applied by one worker in {out['snapshot_seconds']:.1f}s")
            threads = probe.start()
            wait_applying(probe)
            run_rate_sink(bench, dsn, probe, backlog, scripts, rates[0], seconds // 2)  # warm-up, not counted
            for count in (1, 2):
                if count == 2:
                    workers.start()
                    joined = wait_members(info.bootstrap_servers, driver, 2)
                    backlog.wait_drained(60)
                    log(f"kafka bench: worker 2 joined the group in {joined:.1f}s")
                ours = workers.pids()
                steps = step_rates(
                    rates,
                    lambda rate: _no_series(run_rate_sink(bench, dsn, probe, backlog, scripts, rate, seconds)),
                    functools.partial(Resources, jvms, ours),
                    f"sink x{count}",
                )
                workers.check_alive()
                out[f"workers_{count}"] = {
                    "steps": steps,
                    "peak_rss_mb": workers.peaks(),
                    "status": sink_status(info.bootstrap_servers, GROUP, DEAD_LETTERS, driver),
                }
            backlog.wait_drained(120, settle=2.0)
            report = verify(dsn, driver, mapping)
            out["verify_drifts_after"] = len(report.drifts)
        finally:
            probe.stop.set()
            for t in threads:
                t.join(timeout=5)
            workers.stop()
            backlog.close()
    return out


def write_cost_phase(bench: Bench, dsn: str, kafka: LocalKafka, seconds: int) -> dict[str, Any]:
    """Rounds of none / triggers / debezium, `bench.runs` times; no consumer of either capture runs."""
    info = kafka.info()
    rounds: dict[str, list[dict[str, float]]] = {"none": [], "triggers": [], "debezium": []}
    catch_up: list[float | None] = []
    with (
        tempfile.TemporaryDirectory(prefix="pg2neo-bench-") as tmp,
        psycopg.connect(dsn, autocommit=True) as conn,
        bench.driver() as driver,
    ):
        mapping = load_mapping(mapping_path(), conn)
        scripts: list[str] = []
        for name, (weight, text) in WRITE_SCRIPTS.items():
            path = Path(tmp) / f"{name}.sql"
            path.write_text(text)
            scripts += ["-f", f"{path}@{weight}"]
        backlog = Backlog(info.bootstrap_servers, driver, mapping)
        try:
            set_connector(info.connect_url, running=False)
            write_round(dsn, scripts, max(3, seconds // 3))  # warm-up, not counted
            for i in range(bench.runs):
                for variant in rounds:
                    if variant == "triggers":
                        install.init(conn, driver, mapping)
                    if variant == "debezium":
                        install.uninstall(conn)
                        set_connector(info.connect_url, running=True)
                        catch_up.append(backlog.wait_produced_stable(180, quiet=3.0))
                    stats = write_round(dsn, scripts, seconds)
                    if variant == "debezium":
                        set_connector(info.connect_url, running=False)
                    rounds[variant].append(stats)
                    log(f"kafka bench write cost round {i + 1}/{bench.runs} {variant}: {stats.get('tps', 0):,.0f} tps")
        finally:
            backlog.close()
    paired = {
        v: [w["tps"] / o["tps"] for w, o in zip(rounds[v], rounds["none"], strict=True)]
        for v in ("triggers", "debezium")
    }
    return {
        "seconds_per_round": seconds,
        "rounds": rounds,
        "tps_median": {v: median([r["tps"] for r in rs]) for v, rs in rounds.items()},
        "latency_avg_ms_median": {v: median([r["latency_avg_ms"] for r in rs]) for v, rs in rounds.items()},
        "tps_ratio_vs_none_per_round": paired,
        "tps_ratio_vs_none": {v: median(p) for v, p in paired.items()},
        "tps_loss_pct": {v: 100 * (1 - median(p)) for v, p in paired.items()},
        "debezium_catch_up_seconds": catch_up,
    }


# -- main -----------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def local_kafka() -> Iterator[LocalKafka]:
    root = Path(tempfile.mkdtemp(prefix="pg2neo-bench-kafka-", dir="/tmp"))
    kafka = LocalKafka(root, DevSettings().cache_dir, partitions=PARTITIONS)
    try:
        yield kafka
    finally:
        kafka.down()
        shutil.rmtree(root, ignore_errors=True)


def _best(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The highest bounded step's figures (offered rate, achieved TPS, lag), or nothing when none was bounded."""
    bounded = [s for s in steps if s["bounded"]]
    if not bounded:
        return {"highest_bounded_tx_per_s": 0}
    top = max(bounded, key=lambda s: s["offered_tx_per_s"])
    return {
        "highest_bounded_tx_per_s": top["offered_tx_per_s"],
        "achieved_tps": top["pgbench"].get("tps"),
        "lag_p50_s": top["lag_s"]["p50"],
        "lag_p99_s": top["lag_s"]["p99"],
        "jvm_cpu_cores": top["resources"]["jvm_cpu_cores_total"],
        "jvm_cpu_by_process": {k: top["resources"]["cpu_cores"][k] for k in ("neo4j", "kafka_broker", "kafka_connect")},
        "pg2neo_cpu_cores": top["resources"]["pg2neo_cpu_cores_total"],
        "pg2neo_rss_mb_live": sum(top["resources"]["pg2neo_rss_mb_max"].values()),
    }


def main(bench: Bench) -> dict[str, Any]:
    scale = 500 if bench.quick else 5000
    rates = [100, 300, 1000] if bench.quick else [250, 1000, 2500, 5000]
    seconds = 8 if bench.quick else 20
    write_seconds = 4 if bench.quick else 15
    load_before = load()
    drop_slot(bench.info.pg_dsn)  # a slot left by an interrupted run would keep DROP DATABASE from working
    dsn = bench.fresh_db(DB)
    with local_kafka() as kafka:
        starting = threading.Thread(target=kafka.up, daemon=True)
        starting.start()  # the JVMs start while the data is generated
        with psycopg.connect(dsn, autocommit=True) as conn:
            load_schema(conn)
            generate(conn, scale)
            counts = row_counts(conn)
            # What `pg2neo kafka check` asks of the demo schema: deletes must carry the node key (neo4j_node_id).
            for table in ("content_items", "content_chunks", "threads", "messages"):
                conn.execute(
                    sql.SQL("ALTER TABLE {} REPLICA IDENTITY USING INDEX {}").format(
                        sql.Identifier(table), sql.Identifier(f"{table}_neo4j_node_id_key")
                    )
                )
            row = conn.execute("SELECT id::text FROM tenants ORDER BY id LIMIT 1").fetchone()
            assert row is not None
            tenant_id = str(row[0])
        check = subprocess.run(
            bench.service_command("--mapping", str(mapping_path()), "kafka", "check", "--name", NAMES.name),
            env=bench.service_env(dsn), capture_output=True, text=True, check=False,
        )  # fmt: skip
        if check.returncode != 0:
            raise RuntimeError(f"pg2neo kafka check: {check.stdout}{check.stderr}")
        starting.join()
        kafka.info()  # raises when up() failed in its thread
        if kafka.running_pid("connect") is None:
            raise RuntimeError("the local Kafka did not start (see its logs)")
        log(f"kafka bench: {sum(counts.values()):,} rows (scale {scale}); Kafka up at {kafka.info().bootstrap_servers}")
        jvms = {
            "neo4j": bench.stack.neo4j.running_pid(),
            "kafka_broker": kafka.running_pid("broker"),
            "kafka_connect": kafka.running_pid("connect"),
        }
        errors: dict[str, str] = {}
        try:
            with tempfile.TemporaryDirectory(prefix="pg2neo-bench-") as tmp:
                scripts = write_scripts(Path(tmp))
                trigger = trigger_phase(bench, dsn, tenant_id, scripts, rates, seconds, jvms)
                try:
                    sink = sink_phase(bench, dsn, kafka, tenant_id, scripts, rates, seconds, jvms)
                except Exception:  # the trigger figures are kept; the error is raised after the result is written
                    errors["sink"] = traceback.format_exc()
                    log(f"kafka bench: sink phase FAILED:\n{errors['sink']}")
                    sink = {f"workers_{n}": {"steps": [], "peak_rss_mb": {}} for n in (1, 2)}
            try:
                write_cost = write_cost_phase(bench, dsn, kafka, write_seconds)
            except Exception:
                errors["write_cost"] = traceback.format_exc()
                log(f"kafka bench: write cost phase FAILED:\n{errors['write_cost']}")
                write_cost = {}
        finally:
            with contextlib.suppress(urllib.error.URLError, OSError):
                _rest("DELETE", f"{kafka.info().connect_url}/connectors/{NAMES.name}")
            drop_slot(bench.info.pg_dsn)
    modes = {
        "trigger": {**_best(trigger["steps"]), "peak_rss_mb": trigger["peak_rss_mb"]},
        **{
            f"sink_{n}_worker{'s' if n > 1 else ''}": {
                **_best(sink[f"workers_{n}"]["steps"]),
                "peak_rss_mb": sink[f"workers_{n}"]["peak_rss_mb"],
            }
            for n in (1, 2)
        },
    }
    base = modes["trigger"]
    ratios = {
        name: {
            "highest_bounded_rate": _ratio(m["highest_bounded_tx_per_s"], base["highest_bounded_tx_per_s"]),
            "lag_p50": _ratio(m.get("lag_p50_s"), base.get("lag_p50_s")),
            "lag_p99": _ratio(m.get("lag_p99_s"), base.get("lag_p99_s")),
        }
        for name, m in modes.items()
        if name != "trigger"
    }
    if write_cost:
        ratios["write_path_tps"] = {
            "debezium_vs_triggers": _ratio(
                write_cost["tps_ratio_vs_none"]["debezium"], write_cost["tps_ratio_vs_none"]["triggers"]
            )
        }
    doc = {
        "scale": scale,
        "rows": counts,
        "rates_offered": rates,
        "seconds_per_rate": seconds,
        "runs_per_rate": 1,
        "partitions_per_topic": PARTITIONS,
        "baseline": "trigger mode (pg2neo run), same database, same run",
        "workload": {
            "live": {k: w for k, (w, _) in LIVE_SCRIPTS.items()},
            "write_cost": {k: w for k, (w, _) in WRITE_SCRIPTS.items()},
        },
        "write_cost": write_cost,
        "trigger": trigger,
        "sink": sink,
        "modes": modes,
        "ratios_vs_trigger": ratios,
        "errors": errors,
        "load_before": load_before,
        "load_after": load(),
        "method": __doc__,
    }
    write_result(bench, "kafka", doc)
    _chart(bench, trigger, sink)
    if errors:
        raise RuntimeError(
            f"kafka bench: {', '.join(errors)} failed (figures so far in kafka*.json):\n" + "\n".join(errors.values())
        )
    return {
        "kafka": {
            "write_cost": {
                "tps_median": write_cost["tps_median"],
                "tps_loss_pct": write_cost["tps_loss_pct"],
            },
            "modes": modes,
            "ratios_vs_trigger": ratios,
            "sink_snapshot_seconds": sink["snapshot_seconds"],
            "trigger_snapshot_seconds": trigger["snapshot_seconds"],
            "verify_drifts_after_sink": sink.get("verify_drifts_after"),
        }
    }


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return value / base


def markdown_rows(s: dict[str, Any]) -> list[str]:
    """The summary table's rows for this benchmark (run_all's `markdown`)."""
    if "kafka" not in s:
        return []
    k = s["kafka"]
    w = k["write_cost"]
    rows = [
        f"| Write-path cost, trigger vs Debezium (pgbench, update-heavy) | none {w['tps_median']['none']:,.0f} TPS; "
        f"triggers {w['tps_loss_pct']['triggers']:.1f}% fewer; Debezium {w['tps_loss_pct']['debezium']:.1f}% fewer "
        "| | |"
    ]
    for name, m in k["modes"].items():
        peak = sum(v or 0.0 for v in m["peak_rss_mb"].values())
        lag = (
            f"lag p50 {m['lag_p50_s']:.3f} s, p99 {m['lag_p99_s']:.3f} s; JVM CPU {m['jvm_cpu_cores']:.2f} cores"
            if "lag_p50_s" in m
            else "no bounded rate"
        )
        rows.append(
            f"| Live sync, {name.replace('_', ' ')} | highest bounded {m['highest_bounded_tx_per_s']:,} tx/s; {lag}; "
            f"peak RSS of pg2neo's processes {peak:,.0f} MB | | |"
        )
    return rows


def _chart(bench: Bench, trigger: dict[str, Any], sink: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    series = {
        "trigger mode": trigger["steps"],
        **{f"sink, {n} worker(s)": sink[f"workers_{n}"]["steps"] for n in (1, 2)},
    }
    for label, steps in series.items():
        rates = [s["offered_tx_per_s"] for s in steps]
        ax.plot(rates, [s["lag_s"]["p99"] for s in steps], marker="o", label=f"{label} p99")
        ax.plot(rates, [s["lag_s"]["p50"] for s in steps], marker=".", linestyle="--", label=f"{label} p50")
    ax.set_xlabel("offered pgbench rate (tx/s)")
    ax.set_ylabel("commit → visible in Neo4j (s)")
    ax.set_yscale("log")
    ax.set_title("Trigger mode vs Debezium → Kafka → pg2neo sink")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(chart_path(bench, "kafka"), dpi=110)
    plt.close(fig)
