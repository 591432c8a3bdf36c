"""Profile one 10k x 2 noop_fanout run: py-spy on the host, pg_stat_statements for the SQL.

Starts its own PostgreSQL cluster (pg_stat_statements must be preloaded, which a shared
server rarely allows) and Azurite. Needs py-spy in the venv (not a requirement); --no-spy
runs without it.

With --history N the same job runs twice, in two databases of that cluster: one empty,
one holding N finished tasks (bench.workloads.load_history, as the bench's history row).
The statistics are reset after the load, and the per-statement mean times of the two
runs are printed side by side, largest growth of total time first. --explain-ms M adds
auto_explain (nested statements too, so the plans inside the stored procedures) for
statements slower than M ms; the plans go to the cluster's server.log, copied to --out.

Run: .venv/bin/python -m bench.profile_run [--tasks 10000] [--stages 2] [--out .run/profile]
     .venv/bin/python -m bench.profile_run --history 2000000 [--explain-ms 20] [--no-spy]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from bench.bench_e2e import RUN_DIR, wait_healthy
from bench.services import host_env
from bench.workloads import fanout, load_history
from lightsout.devservices import (
    ClusterPostgres,
    _cluster_dir,
    ensure_azurite,
    find_pg_bin,
    free_port,
)
from repositories.migrations import migrate

ROOT = Path(__file__).resolve().parent.parent
TOP_SQL = (
    "SELECT calls, round(total_exec_time::numeric, 0) AS total_ms,"
    " round(mean_exec_time::numeric, 3) AS mean_ms, rows,"
    " left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS q"
    " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database"
    " WHERE datname = current_database()) ORDER BY total_exec_time DESC LIMIT 20"
)
# Per statement of this database: calls, total and mean time, shared blocks hit/read/written.
STATEMENTS = (
    "SELECT regexp_replace(query, '\\s+', ' ', 'g'), sum(calls)::bigint,"
    " sum(total_exec_time), sum(shared_blks_hit)::bigint, sum(shared_blks_read)::bigint,"
    " sum(shared_blks_dirtied)::bigint, sum(shared_blks_written)::bigint"
    " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database"
    " WHERE datname = current_database()) GROUP BY 1"
)

TIMELINE = (
    "SELECT stage, floor(extract(epoch FROM claimed_at - (SELECT max(created_at)"
    " FROM lightsout.jobs)))::int AS second, count(*) AS claimed, min(s.started_at)::time"
    " FROM lightsout.tasks t JOIN lightsout.job_stages s USING (job_id, stage)"
    " WHERE t.job_id = (SELECT job_id FROM lightsout.jobs ORDER BY created_at DESC LIMIT 1)"
    " GROUP BY 1, 2 ORDER BY 1, 2"
)

Stats = dict[str, tuple[int, float, int, int, int, int]]


class StatsCluster(ClusterPostgres):
    explain_ms: int | None = None

    def start(self) -> None:
        libs = "pg_stat_statements" + (",auto_explain" if self.explain_ms is not None else "")
        options = (
            f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            f" -c shared_preload_libraries={libs} -c pg_stat_statements.track=all"
            " -c pg_stat_statements.max=10000"
        )
        if self.explain_ms is not None:
            options += (
                f" -c auto_explain.log_min_duration={self.explain_ms}"
                " -c auto_explain.log_nested_statements=on -c auto_explain.log_analyze=on"
                " -c auto_explain.log_buffers=on -c auto_explain.log_timing=off"
            )
        self._pg_ctl("-o", options, "-l", str(self.data_dir / "server.log"), "-w", "start")


def database(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = urlsplit(admin_dsn)._replace(path=f"/{name}").geturl()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
    migrate(dsn, "lightsout")
    return dsn


@contextmanager
def host(dsn: str, storage: str, out: Path, spy: bool, tag: str) -> Iterator[str]:
    env = host_env(dsn, storage, tag)  # the bench's: auth on, the bench's key, pool of 20
    hport = free_port()
    cmd = [sys.executable, "-m", "lightsout", "host", "--port", str(hport)]
    if spy:
        spy_cmd = [str(ROOT / ".venv/bin/py-spy"), "record", "-r", "50", "-f", "raw"]
        cmd = [*spy_cmd, "-o", str(out / f"host-{tag}.raw"), "--", *cmd]
    log = (out / f"host-{tag}.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{hport}"
        wait_healthy(url)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(90)


def profile(dsn: str, url: str, tasks: int, stages: int, seed: int, label: str) -> Stats:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
    took = fanout(url, tasks, stages, f"profile{seed}").seconds
    print(f"[{label}] {tasks}x{stages} one host: {took:.2f} s, {tasks * stages / took:.0f} tasks/s")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for row in conn.execute(TIMELINE).fetchall():
            print(f"[{label}] timeline", *row)
        for row in conn.execute(TOP_SQL).fetchall():
            print(f"[{label}]", " | ".join(str(v) for v in row))
        stats: Stats = {}
        for q, *values in conn.execute(STATEMENTS).fetchall():
            stats[q] = (values[0], values[1], values[2], values[3], values[4], values[5])
        calls = sum(v[0] for v in stats.values())
        total = sum(v[1] for v in stats.values())
        print(f"[{label}] all statements: {calls} calls, {total:.0f} ms")
    return stats


def side_by_side(empty: Stats, loaded: Stats, top: int = 30) -> None:
    """Per statement: calls, mean ms and blocks read per call, empty then loaded."""
    rows = []
    for q in set(empty) | set(loaded):
        e = empty.get(q, (0, 0.0, 0, 0, 0, 0))
        ld = loaded.get(q, (0, 0.0, 0, 0, 0, 0))
        rows.append((ld[1] - e[1], q, e, ld))
    rows.sort(key=lambda r: r[0], reverse=True)
    print(
        f"{'grow_ms':>8} | {'calls e/l':>13} | {'mean ms e':>9} | {'mean ms l':>9}"
        f" | {'hit/call e':>10} | {'hit/call l':>10} | {'read/call l':>11} | statement"
    )

    def per(v: tuple[int, float, int, int, int, int], i: int) -> float:
        return v[i] / v[0] if v[0] else 0.0

    for grow, q, e, ld in rows[:top]:
        print(
            f"{grow:8.0f} | {e[0]:>6}/{ld[0]:<6} | {per(e, 1):9.3f} | {per(ld, 1):9.3f}"
            f" | {per(e, 2):10.1f} | {per(ld, 2):10.1f} | {per(ld, 3):11.2f} | {q[:150]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--history", type=int, default=0, help="finished tasks to load")
    parser.add_argument("--explain-ms", type=int, default=None, help="auto_explain threshold")
    parser.add_argument("--no-spy", action="store_true", help="run the host without py-spy")
    parser.add_argument("--out", type=Path, default=RUN_DIR / "profile")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bin_dir = find_pg_bin()
    assert bin_dir is not None
    port = free_port()
    pg = StatsCluster(bin_dir, _cluster_dir(RUN_DIR, port), port)
    pg.explain_ms = args.explain_ms
    pg.init()
    pg.start()
    azurite = ensure_azurite(RUN_DIR)
    admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    spy = not args.no_spy
    try:
        dsn = database(admin, "empty")
        with host(dsn, azurite.connection_string, args.out, spy, "empty") as url:
            empty = profile(dsn, url, args.tasks, args.stages, 7, "empty")
        if args.history:
            dsn = database(admin, "loaded")
            started = time.monotonic()
            load_history(dsn, args.history)
            print(f"[loaded] {args.history} finished tasks in {time.monotonic() - started:.0f} s")
            with host(dsn, azurite.connection_string, args.out, spy, "loaded") as url:
                loaded = profile(dsn, url, args.tasks, args.stages, 8, "loaded")
            side_by_side(empty, loaded)
    finally:
        azurite.stop()
        shutil.copy(pg.data_dir / "server.log", args.out / "server.log")
        pg.stop()


if __name__ == "__main__":
    main()
