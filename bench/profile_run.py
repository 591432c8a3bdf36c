"""Profile one 10k x 2 noop_fanout run: py-spy on the host, pg_stat_statements for the SQL.

Starts its own PostgreSQL cluster (pg_stat_statements must be preloaded, which a shared
server rarely allows) and Azurite. Needs py-spy in the venv (not a requirement).
Run: .venv/bin/python -m bench.profile_run [--tasks 10000] [--stages 2] [--out .run/profile]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg

from bench.bench_e2e import RUN_DIR, run_once, wait_healthy
from lightsout.devservices import (
    ClusterPostgres,
    _cluster_dir,
    ensure_azurite,
    find_pg_bin,
    free_port,
)

ROOT = Path(__file__).resolve().parent.parent
TOP_SQL = (
    "SELECT calls, round(total_exec_time::numeric, 0) AS total_ms,"
    " round(mean_exec_time::numeric, 3) AS mean_ms, rows,"
    " left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS q"
    " FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 20"
)

TIMELINE = (
    "SELECT stage, floor(extract(epoch FROM claimed_at - (SELECT min(created_at)"
    " FROM lightsout.jobs)))::int AS second, count(*) AS claimed, min(s.started_at)::time"
    " FROM lightsout.tasks t JOIN lightsout.job_stages s USING (job_id, stage)"
    " GROUP BY 1, 2 ORDER BY 1, 2"
)


class StatsCluster(ClusterPostgres):
    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1"
            " -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
        )
        self._pg_ctl("-o", options, "-l", str(self.data_dir / "server.log"), "-w", "start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RUN_DIR / "profile")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bin_dir = find_pg_bin()
    assert bin_dir is not None
    port = free_port()
    pg = StatsCluster(bin_dir, _cluster_dir(RUN_DIR, port), port)
    pg.init()
    pg.start()
    azurite = ensure_azurite(RUN_DIR)
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "AzureWebJobsStorage": azurite.connection_string,
            "LIGHTSOUT_SELFTEST_JOB_TYPES": "true",
        }
        hport = free_port()
        raw = [
            str(ROOT / ".venv/bin/py-spy"),
            "record",
            "-r",
            "50",
            "-f",
            "raw",
            "-o",
            str(args.out / "host.raw"),
            "--",
            sys.executable,
            "-m",
            "lightsout",
            "host",
            "--port",
            str(hport),
        ]
        log = (args.out / "host.log").open("wb")
        proc = subprocess.Popen(raw, cwd=ROOT, env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{hport}"
        wait_healthy(url)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_statements_reset()")
        took = run_once(url, args.tasks, args.stages, 7)
        print(
            f"{args.tasks}x{args.stages} one host: {took:.2f} s,"
            f" {args.tasks * args.stages / took:.0f} tasks/s"
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            for row in conn.execute(TIMELINE).fetchall():
                print("timeline", *row)
            for row in conn.execute(TOP_SQL).fetchall():
                print(" | ".join(str(v) for v in row))
            print(
                conn.execute(
                    "SELECT sum(calls), round(sum(total_exec_time)::numeric)"
                    " FROM pg_stat_statements"
                ).fetchone()
            )
        proc.send_signal(signal.SIGINT)
        proc.wait(90)
    finally:
        azurite.stop()
        pg.stop()


if __name__ == "__main__":
    main()
