"""Benchmark 2 (live sync under load) and 5 (profile of the apply loop).

Data flow measured: pgbench writes to the mapped tables -> capture triggers queue keys in pg2neo.changes ->
`pg2neo run` (a real subprocess) re-reads and writes Neo4j. Per offered rate (pgbench -R, one row change per
transaction on average) for a fixed time:
- lag: a probe thread updates a marker row (a tenant's `name`) every 100 ms and remembers when each value was
  committed; a poller thread reads that node in Neo4j every 20 ms; a value's lag is the time from its commit to
  the first poll that sees it (or a newer value). Resolution about 20 ms. pg2neo's own counters are not used.
- throughput: row changes queued (growth of the queue's identity sequence) and applied (queued minus growth of
  the queue depth), sampled every second in PostgreSQL.
An unmeasured warm-up at the lowest rate comes first. Every rate is run `runs` times (3), the queue drained between
runs; a rate's figures are the medians of its runs, and it counts as bounded when most of its runs were. The rate
is stepped up until the queue stops being bounded. Then the service is profiled with py-spy (wall clock, idle
included) at the highest rate that stayed bounded; the raw collapsed stacks (for speedscope or flamegraph.pl)
and a top-costs summary go to bench/results/.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench.common import (
    RESULTS,
    Bench,
    chart_path,
    load,
    log,
    median,
    percentile,
    pgbench_path,
    pipeline,
    wipe_graph,
    write_result,
)
from pg2neo.demo.flow import mapping_path
from pg2neo.demo.generate import generate, load_schema, row_counts
from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime import install
from pg2neo.runtime.service import Stopper, run_snapshot
from pg2neo.transport.queue import queue_totals

DB = "bench_live"

# One statement (one transaction, about one row change) per script; weights give the mix.
SCRIPTS: dict[str, tuple[int, str]] = {
    "insert_message": (
        20,
        "\\set t random(1, :max_thread)\n"
        "INSERT INTO messages (thread_id, role, body, token_count) "
        "SELECT id, 'user', 'bench message ' || :t, 3 FROM threads WHERE id >= :t ORDER BY id LIMIT 1;\n",
    ),
    "update_message": (
        25,
        "\\set m random(1, :max_msg)\nUPDATE messages SET body = 'bench update ' || random() WHERE id = :m;\n",
    ),
    "update_content": (
        20,
        "\\set c random(1, :max_content)\nUPDATE content_items SET title = 'bench title ' || random() WHERE id = :c;\n",
    ),
    "upsert_thread_content": (
        15,
        "\\set t random(1, :max_thread)\n\\set c random(1, :max_content)\n"
        "INSERT INTO thread_content (thread_id, content_item_id, relevance_score) "
        "SELECT t.id, c.id, random() FROM threads t, content_items c WHERE t.id = :t AND c.id = :c "
        "ON CONFLICT (thread_id, content_item_id) DO UPDATE SET relevance_score = EXCLUDED.relevance_score;\n",
    ),
    "insert_message_context": (
        10,
        "\\set m random(1, :max_msg)\n\\set ch random(1, :max_chunk)\n"
        "INSERT INTO message_context (message_id, chunk_id, rank) SELECT m.id, ch.id, 1 "
        "FROM messages m, content_chunks ch WHERE m.id = :m AND ch.id = :ch ON CONFLICT DO NOTHING;\n",
    ),
    "delete_message": (5, "\\set m random(1, :max_msg)\nDELETE FROM messages WHERE id = :m;\n"),
    "delete_thread_content": (5, "\\set t random(1, :max_thread)\nDELETE FROM thread_content WHERE thread_id = :t;\n"),
}


def write_scripts(folder: Path) -> list[str]:
    args = []
    for name, (weight, text) in SCRIPTS.items():
        path = folder / f"{name}.sql"
        path.write_text(text)
        args += ["-f", f"{path}@{weight}"]
    return args


def pgbench_conn_args(dsn: str) -> list[str]:
    d = conninfo_to_dict(dsn)
    args = []
    for key, flag in (("host", "-h"), ("port", "-p"), ("user", "-U")):
        if d.get(key):
            args += [flag, str(d[key])]
    return [*args, str(d.get("dbname", "postgres"))]


def pgbench_env(dsn: str) -> dict[str, str]:
    import os

    d = conninfo_to_dict(dsn)
    env = dict(os.environ)
    if d.get("password"):
        env["PGPASSWORD"] = str(d["password"])
    return env


def parse_pgbench(output: str) -> dict[str, float]:
    out: dict[str, float] = {}
    patterns = {
        "tps": r"tps = ([\d.]+)",
        "latency_avg_ms": r"latency average = ([\d.]+) ms",
        "latency_stddev_ms": r"latency stddev = ([\d.]+) ms",
        "transactions": r"number of transactions actually processed: (\d+)",
        "failed": r"number of failed transactions: (\d+)",
        "schedule_lag_ms": r"rate limit schedule lag: avg ([\d.]+)",
    }
    for key, pattern in patterns.items():
        m = re.search(pattern, output)
        if m:
            out[key] = float(m.group(1))
    return out


def id_bounds(conn: psycopg.Connection[Any]) -> dict[str, int]:
    row = conn.execute(
        "SELECT (SELECT max(id) FROM messages), (SELECT max(id) FROM threads), (SELECT max(id) FROM content_items), "
        "(SELECT max(id) FROM content_chunks)"
    ).fetchone()
    assert row is not None
    return {"max_msg": row[0], "max_thread": row[1], "max_content": row[2], "max_chunk": row[3]}


# -- the probe ----------------------------------------------------------------------------------------------------


@dataclass
class Probe:
    dsn: str
    bench: Bench
    tenant_id: str
    period: float = 0.1
    poll: float = 0.02
    committed: dict[int, float] = field(default_factory=dict)
    visible: dict[int, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    paused: threading.Event = field(default_factory=threading.Event)
    counter: int = 0

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._write, daemon=True), threading.Thread(target=self._read, daemon=True)]
        for t in threads:
            t.start()
        return threads

    def _write(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            next_at = time.monotonic()
            while not self.stop.is_set():
                if not self.paused.is_set():
                    self.counter += 1
                    n = self.counter
                    conn.execute("UPDATE tenants SET name = %s WHERE id = %s", (f"probe-{n}", self.tenant_id))
                    self.committed[n] = time.time()
                next_at += self.period
                self.stop.wait(max(0.0, next_at - time.monotonic()))

    def _read(self) -> None:
        seen = 0
        with self.bench.driver() as driver, driver.session() as session:
            while not self.stop.is_set():
                record = session.run("MATCH (t:Tenant {id: $id}) RETURN t.name AS name", id=self.tenant_id).single()
                now = time.time()
                name = record["name"] if record else None
                if isinstance(name, str) and name.startswith("probe-"):
                    n = int(name[6:])
                    for k in range(seen + 1, n + 1):
                        if k in self.committed:
                            self.visible.setdefault(k, now)
                    seen = max(seen, n)
                self.stop.wait(self.poll)

    def lags(self, first: int, last: int) -> tuple[list[tuple[float, float]], int]:
        """(commit time, lag) of probes first..last seen in Neo4j; and how many were never seen."""
        out, missing = [], 0
        for n in range(first, last + 1):
            if n not in self.committed:
                continue
            if n in self.visible:
                out.append((self.committed[n], self.visible[n] - self.committed[n]))
            else:
                missing += 1
        return out, missing


# -- the queue sampler ----------------------------------------------------------------------------------------------


def queue_sample(conn: psycopg.Connection[Any]) -> tuple[float, int, int]:
    totals = queue_totals(conn)
    return time.time(), totals.enqueued, totals.waiting


class Sampler(threading.Thread):
    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.samples: list[tuple[float, int, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                self.samples.append(queue_sample(conn))
                self.stop.wait(1.0)


def wait_drained(dsn: str, timeout: float) -> float | None:
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() - started < timeout:
            if queue_sample(conn)[2] == 0:
                return time.monotonic() - started
            time.sleep(0.1)
    return None


# -- one rate step --------------------------------------------------------------------------------------------------


def run_rate(
    bench: Bench, dsn: str, probe: Probe, scripts: list[str], rate: int, seconds: int, profile_to: Path | None = None
) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        bounds = id_bounds(conn)
    defines = [a for k, v in bounds.items() for a in ("-D", f"{k}={v}")]
    clients = max(4, min(16, rate // 250))
    command = [
        pgbench_path(),
        "-n",
        "-c",
        str(clients),
        "-j",
        "2",
        "-R",
        str(rate),
        "-T",
        str(seconds),
        *defines,
        *scripts,
        *pgbench_conn_args(dsn),
    ]
    sampler = Sampler(dsn)
    sampler.start()
    spy: subprocess.Popen[bytes] | None = None
    if profile_to is not None:
        spy = start_profile(bench, profile_to, seconds)
    first_probe = probe.counter + 1
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True, env=pgbench_env(dsn), check=False)
    ended = time.time()
    last_probe = probe.counter
    drain_timeout = 30.0 if bench.quick else 120.0
    drained = wait_drained(dsn, drain_timeout)
    time.sleep(0.3)  # let the poller see the last probe values
    sampler.stop.set()
    sampler.join()
    if spy is not None:
        spy.wait(timeout=seconds + 60)
    stats = parse_pgbench(result.stdout)
    if result.returncode != 0:
        stats["returncode"] = result.returncode
        stats["stderr_tail"] = result.stderr[-800:]  # type: ignore[assignment]
    lags, missing = probe.lags(first_probe, last_probe)
    lag_values = [lag for _, lag in lags]
    window = [s for s in sampler.samples if started <= s[0] <= ended]
    if len(window) >= 2:
        span = window[-1][0] - window[0][0]
        queued = window[-1][1] - window[0][1]
        depth_growth = window[-1][2] - window[0][2]
        enqueue_rate = queued / span
        apply_rate = (queued - depth_growth) / span
        tail = [s[2] for s in window[len(window) // 2 :]]
    else:
        enqueue_rate = apply_rate = float("nan")
        tail = []
    max_depth = max((s[2] for s in window), default=0)
    end_depth = median(tail[-5:]) if tail else 0.0
    bounded = (
        drained is not None
        and missing == 0
        and end_depth <= max(1000.0, 2 * enqueue_rate)
        and percentile(lag_values, 99) < 5.0
    )
    return {
        "offered_tx_per_s": rate,
        "seconds": seconds,
        "clients": clients,
        "pgbench": stats,
        "row_changes_queued_per_s": enqueue_rate,
        "row_changes_applied_per_s": apply_rate,
        "queue_depth_max": max_depth,
        "queue_depth_end": end_depth,
        "drain_seconds_after_writer": drained,
        "lag_s": {
            "p50": percentile(lag_values, 50),
            "p95": percentile(lag_values, 95),
            "p99": percentile(lag_values, 99),
            "max": max(lag_values, default=float("nan")),
            "probes": len(lag_values),
            "never_seen": missing,
        },
        "bounded": bounded,
        "lag_series": [(round(t - started, 2), round(lag, 4)) for t, lag in lags],
        "queue_series": [(round(t - started, 1), seq, depth) for t, seq, depth in sampler.samples],
    }


def measure_rate(bench: Bench, dsn: str, probe: Probe, scripts: list[str], rate: int, seconds: int) -> dict[str, Any]:
    """`bench.runs` runs at one offered rate, the queue drained between them; medians of the per-run figures,
    bounded when most runs were. The lag and queue series kept are those of the run with the median p99."""
    runs = []
    for i in range(bench.runs):
        wait_drained(dsn, 120)
        run = run_rate(bench, dsn, probe, scripts, rate, seconds)
        runs.append(run)
        lag = run["lag_s"]
        log(
            f"live rate {rate}/s run {i + 1}/{bench.runs}: applied {run['row_changes_applied_per_s']:,.0f}/s, "
            f"lag p50 {lag['p50']:.3f}s p99 {lag['p99']:.3f}s, bounded={run['bounded']}"
        )
    by_p99 = sorted(runs, key=lambda r: r["lag_s"]["p99"])
    typical = by_p99[len(by_p99) // 2]
    bounded_runs = sum(1 for r in runs if r["bounded"])
    return {
        "offered_tx_per_s": rate,
        "seconds": seconds,
        "runs": [{k: v for k, v in r.items() if not k.endswith("_series")} for r in runs],
        "runs_bounded": bounded_runs,
        "row_changes_queued_per_s": median([r["row_changes_queued_per_s"] for r in runs]),
        "row_changes_applied_per_s": median([r["row_changes_applied_per_s"] for r in runs]),
        "lag_s": {
            **{p: median([r["lag_s"][p] for r in runs]) for p in ("p50", "p95", "p99")},
            "max": max(r["lag_s"]["max"] for r in runs),
            "note": "p50/p95/p99: medians over the runs of each run's percentile",
        },
        "bounded": 2 * bounded_runs > len(runs),
        "lag_series": typical["lag_series"],
        "queue_series": typical["queue_series"],
    }


# -- the profile ----------------------------------------------------------------------------------------------------


class Service:
    def __init__(self, bench: Bench, dsn: str) -> None:
        self.process = subprocess.Popen(
            bench.service_command("run"), env=bench.service_env(dsn), stdin=subprocess.DEVNULL
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


_SERVICE: dict[str, Service] = {}


class _ProfileFailed(Exception):
    """The profiling run failed; the measured rates stand."""


def start_profile(bench: Bench, out: Path, seconds: int) -> subprocess.Popen[bytes]:
    spy = Path(sys.executable).parent / "py-spy"  # a dev dependency, installed next to this interpreter
    if not spy.exists():
        raise RuntimeError(f"py-spy is not installed in {spy.parent}: run `make deps` (it is a dev dependency)")
    pid = _SERVICE["live"].process.pid
    return subprocess.Popen(
        [
            str(spy),
            "record",
            "-p",
            str(pid),
            "-d",
            str(seconds),
            "--idle",
            "-r",
            "100",
            "--format",
            "raw",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarize_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """Inclusive and self (leaf) share of samples per function, over the apply loop's stacks only."""
    inclusive: dict[str, int] = defaultdict(int)
    leaf: dict[str, int] = defaultdict(int)
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if "run_service" not in stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        for f in dict.fromkeys(frames):
            inclusive[f] += count
        leaf[frames[-1]] += count
    if total == 0:
        return {"samples": 0}

    def share(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "inclusive_pct": share(inclusive), "self_pct": share(leaf)}


# -- main -----------------------------------------------------------------------------------------------------------


def main(bench: Bench) -> dict[str, Any]:
    scale = 2000 if bench.quick else 10_000
    rates = [500, 2000] if bench.quick else [1000, 2500, 5000]
    seconds = 10 if bench.quick else 60
    load_before = load()
    dsn = bench.fresh_db(DB)
    with psycopg.connect(dsn, autocommit=True) as conn, bench.driver() as driver:
        load_schema(conn)
        generate(conn, scale)
        counts = row_counts(conn)
        mapping = load_mapping(mapping_path(), conn)
        wipe_graph(driver)
        install.init(conn, driver, mapping)
        with pipeline(dsn, driver, mapping) as synced:
            run_snapshot(synced.engine(), Stopper(), lambda t, r: None)
        row = conn.execute("SELECT id::text FROM tenants ORDER BY id LIMIT 1").fetchone()
        assert row is not None
        tenant_id = str(row[0])
    log(f"live: {sum(counts.values()):,} rows loaded and snapshotted (scale {scale})")

    steps: list[dict[str, Any]] = []
    profile: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pg2neo-bench-") as tmp:
        scripts = write_scripts(Path(tmp))
        service = Service(bench, dsn)
        _SERVICE["live"] = service
        probe = Probe(dsn, bench, tenant_id)
        threads = probe.start()
        try:
            # Unmeasured warm-up: right after the snapshot Neo4j checkpoints and the JVM compiles the new
            # statements; a first full run measured that as a 3.6 s stall in its first seconds.
            run_rate(bench, dsn, probe, scripts, rates[0], 5 if bench.quick else 15)
            wait_drained(dsn, 60)
            for rate in rates:
                step = measure_rate(bench, dsn, probe, scripts, rate, seconds)
                steps.append(step)
                if not step["bounded"]:
                    break
            bounded = [s for s in steps if s["bounded"]]
            profile_rate = max((s["offered_tx_per_s"] for s in bounded), default=rates[0])
            raw = RESULTS / f"profile_live{'_quick' if bench.quick else ''}.txt"
            RESULTS.mkdir(parents=True, exist_ok=True)
            profile_seconds = 10 if bench.quick else 30
            wait_drained(dsn, 120)
            try:
                pstep = run_rate(bench, dsn, probe, scripts, profile_rate, profile_seconds, profile_to=raw)
            except Exception as exc:  # the rates measured above are kept; the profile says why it is missing
                profile = {"rate": profile_rate, "error": repr(exc)}
                log(f"live profile failed: {exc!r}")
                raise _ProfileFailed from exc
            profile = {
                "rate": profile_rate,
                "seconds": profile_seconds,
                "raw_stacks": str(raw.relative_to(RESULTS.parent.parent)),
                "tool": "py-spy record --idle -r 100 --format raw (wall clock, waiting included)",
                "step": {k: v for k, v in pstep.items() if not k.endswith("_series")},
                "summary": summarize_profile(raw) if raw.exists() else {"error": "py-spy wrote nothing"},
            }
            log(f"live profile at {profile_rate}/s written to {raw}")
        except _ProfileFailed:
            pass
        finally:
            probe.stop.set()
            for t in threads:
                t.join(timeout=5)
            service.stop()

    best = max((s["row_changes_applied_per_s"] for s in steps if s["bounded"]), default=0.0)
    at_5000 = next((s for s in steps if s["offered_tx_per_s"] == 5000), None)
    goal_met = bool(at_5000 and at_5000["bounded"] and at_5000["lag_s"]["p99"] < 1.0)
    doc = {
        "scale": scale,
        "rows": counts,
        "rates_offered": rates,
        "seconds_per_rate": seconds,
        "workload": {k: w for k, (w, _) in SCRIPTS.items()},
        "scripts": {k: t for k, (_, t) in SCRIPTS.items()},
        "steps": steps,
        "highest_bounded_applied_per_s": best,
        "goal": "5000 row changes/s sustained with p99 lag < 1 s",
        "goal_met": goal_met,
        "profile": profile,
        "load_before": load_before,
        "load_after": load(),
        "method": __doc__,
    }
    write_result(bench, "live", doc)
    _chart(bench, steps)
    summary_steps = [
        {
            "rate": s["offered_tx_per_s"],
            "applied_per_s": s["row_changes_applied_per_s"],
            "queued_per_s": s["row_changes_queued_per_s"],
            "lag_s": {k: s["lag_s"][k] for k in ("p50", "p95", "p99")},
            "bounded": s["bounded"],
            "runs_bounded": f"{s['runs_bounded']}/{len(s['runs'])}",
        }
        for s in steps
    ]
    return {"live": {"steps": summary_steps, "goal_met": goal_met, "profile": profile.get("summary", {})}}


def _chart(bench: Bench, steps: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for s in steps:
        series = s["lag_series"]
        label = f"{s['offered_tx_per_s']}/s offered ({s['row_changes_applied_per_s']:,.0f}/s applied)"
        ax1.plot([t for t, _ in series], [lag for _, lag in series], label=label, linewidth=0.9)
        q = s["queue_series"]
        ax2.plot([t for t, _, _ in q], [d for _, _, d in q], label=label, linewidth=0.9)
    ax1.axhline(1.0, color="red", linestyle="--", linewidth=0.8, label="1 s goal")
    ax1.set_ylabel("commit → visible in Neo4j (s)")
    ax1.set_yscale("log")
    ax1.legend(fontsize=8)
    ax1.set_title("Live sync: probe lag over time per offered rate")
    ax2.set_ylabel("queue depth (rows)")
    ax2.set_xlabel("seconds since the writer started")
    fig.tight_layout()
    fig.savefig(chart_path(bench, "live"), dpi=110)
    plt.close(fig)
