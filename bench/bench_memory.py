"""Benchmark 4, memory: peak RSS of `pg2neo run --until-empty` draining a backlog of queued changes.

Data flow measured: a backlog in pg2neo.changes (built while no service runs, by UPDATEs of `updated_at` in
chunks of 50,000 rows, every table of TABLES giving its share, so that both backlog sizes hold the same mix of row
sizes) -> the service subprocess
drains it to Neo4j. RSS of the subprocess is sampled with psutil every 50 ms; the peak is reported per run.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import psutil
import psycopg
from psycopg import sql

from bench.bench_snapshot import DB as SNAPSHOT_DB
from bench.common import Bench, chart_path, load, log, median, write_result
from pg2neo.transport.queue import queue_depth

TABLES = ("content_chunks", "messages", "content_items", "threads")
CHUNK = 50_000


def build_backlog(dsn: str, target: int) -> int:
    """Queue about `target` changes (one per updated row), the same mix of tables at every size: each table gives
    its share of the rows (more passes when `target` exceeds them). Returns the queue depth reached."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        bounds: dict[str, tuple[int, int, int]] = {}
        for t in TABLES:
            row = conn.execute(
                sql.SQL("SELECT min(id), max(id), count(*) FROM {}").format(sql.Identifier(t))
            ).fetchone()
            assert row is not None
            bounds[t] = (int(row[0]), int(row[1]), int(row[2]))
        total = sum(count for _, _, count in bounds.values())
        made = 0
        while made < target:
            share = min(1.0, (target - made) / total)
            for t, (low, high, count) in bounds.items():
                wanted = max(1, round(share * count))
                done, at = 0, low
                while done < wanted and at <= high:
                    width = min(CHUNK, wanted - done)
                    cur = conn.execute(
                        sql.SQL("UPDATE {} SET updated_at = clock_timestamp() WHERE id >= %s AND id < %s").format(
                            sql.Identifier(t)
                        ),
                        (at, at + width),
                    )
                    done += max(cur.rowcount, 0)
                    at += width
                made += done
        return queue_depth(conn)


def drain(bench: Bench, dsn: str) -> dict[str, float]:
    started = time.monotonic()
    process = subprocess.Popen(
        bench.service_command("run", "--until-empty"), env=bench.service_env(dsn), stdin=subprocess.DEVNULL
    )
    ps = psutil.Process(process.pid)
    peak = 0
    samples: list[int] = []
    while process.poll() is None:
        try:
            rss = ps.memory_info().rss
        except psutil.Error:
            break
        peak = max(peak, rss)
        samples.append(rss)
        time.sleep(0.05)
    process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"pg2neo run --until-empty exited with {process.returncode}")
    seconds = time.monotonic() - started
    return {
        "peak_rss_mb": peak / 2**20,
        "median_rss_mb": median([s / 2**20 for s in samples]),
        "seconds": seconds,
        "samples": len(samples),
    }


def main(bench: Bench) -> dict[str, Any]:
    sizes = bench.backlogs or ([5_000, 20_000] if bench.quick else [100_000, 1_000_000])
    load_before = load()
    with psycopg.connect(bench.info.pg_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (SNAPSHOT_DB,)).fetchone()
    if exists is None:
        raise RuntimeError("the memory benchmark reuses the snapshot benchmark's database: run bench_snapshot first")
    dsn = psycopg.conninfo.make_conninfo(bench.info.pg_dsn, dbname=SNAPSHOT_DB)
    results: dict[str, Any] = {}
    for size in sizes:
        runs = []
        for i in range(bench.runs):
            t0 = time.monotonic()
            depth = build_backlog(dsn, size)
            built = time.monotonic() - t0
            stats = drain(bench, dsn)
            stats.update({"backlog": depth, "build_seconds": built, "drain_rate_per_s": depth / stats["seconds"]})
            runs.append(stats)
            log(
                f"memory {size:,} run {i + 1}/{bench.runs}: backlog {depth:,}, peak RSS {stats['peak_rss_mb']:.0f} MB, "
                f"drained in {stats['seconds']:.0f}s ({stats['drain_rate_per_s']:,.0f}/s)"
            )
        results[str(size)] = {
            "runs": runs,
            "peak_rss_mb_median": median([r["peak_rss_mb"] for r in runs]),
            "drain_rate_per_s_median": median([r["drain_rate_per_s"] for r in runs]),
        }
    peaks = [results[str(s)]["peak_rss_mb_median"] for s in sizes]
    growth = peaks[-1] / peaks[0]
    goals = {"peak < 300 MB": max(peaks) < 300, "not growing with backlog (<= 10% more)": growth <= 1.10}
    doc = {
        "backlogs": sizes,
        "runs": bench.runs,
        "results": results,
        "peak_growth_ratio_largest_over_smallest": growth,
        "goals_met": goals,
        "load_before": load_before,
        "load_after": load(),
        "method": __doc__,
    }
    write_result(bench, "memory", doc)
    _chart(bench, sizes, results)
    return {"memory": {"peak_rss_mb": dict(zip(map(str, sizes), peaks, strict=True)), "goals_met": goals}}


def _chart(bench: Bench, sizes: list[int], results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    labels = [f"{s:,}" for s in sizes]
    peaks = [results[str(s)]["peak_rss_mb_median"] for s in sizes]
    bars = ax.bar(labels, peaks)
    ax.bar_label(bars, labels=[f"{p:.0f} MB" for p in peaks])
    ax.axhline(300, color="red", linestyle="--", linewidth=0.8, label="300 MB goal")
    ax.set_xlabel("queued changes drained")
    ax.set_ylabel("peak RSS of `pg2neo run --until-empty` (MB)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(chart_path(bench, "memory"), dpi=110)
    plt.close(fig)
