"""`python -m lightsout bench`: every figure of issue 9 in one table, beside its raw limit.

Each row runs --runs times (3 by default) and shows the median with min and max. The raw
limits (Azurite's queue rates, PostgreSQL's commit rate) are measured in the same run,
because the machine is shared and its figures move. `--quick` is a smoke run of every
row at small sizes; `--rows` picks rows.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from bench import raw_limits, workloads
from bench.celery_chord import chord_run
from bench.services import RUN_DIR, host_env, hosts, scratch_database
from lightsout.devservices import AzuriteService, PostgresService, ensure_azurite, ensure_postgres
from repositories.migrations import migrate

CPU_COLUMN = "CPU ref ms"
CPU_CAPTION = (
    f"{CPU_COLUMN}: a fixed pure-Python loop of {raw_limits.CPU_REFERENCE_LOOP:,} steps, timed just"
    " before the row (median of 5); the shared machine's speed moves, and a row measured"
    " while it was slow shows a higher figure there"
)
ROWS = ("raw", "http", "e2e", "transitions", "submit", "stage100k", "history", "celery")


@dataclass(frozen=True)
class Sizes:
    fanout: int = 10_000
    raw_messages: int = 2_000
    commits: int = 4_000
    n10_jobs: int = 3
    transition_sizes: tuple[int, ...] = (10, 100, 1_000)
    submit_per_client: int = 100
    big_stage: int = 100_000
    history: int = 2_000_000
    celery_tasks: int = 10_000
    celery_limit_s: float = 300.0


QUICK = Sizes(
    fanout=1_000, raw_messages=300, commits=800, n10_jobs=1, transition_sizes=(10, 100),
    submit_per_client=10, big_stage=5_000, history=50_000, celery_tasks=500, celery_limit_s=60,
)  # fmt: skip


@dataclass
class Figure:
    what: str
    unit: str
    values: list[float] = field(default_factory=list)
    raw: str = ""
    note: str = ""
    cpu_ms: float | None = None  # raw_limits.cpu_reference_ms() just before the figure's row

    def cells(self) -> list[str]:
        cpu = _num(self.cpu_ms)
        if not self.values:
            return [self.what, "-", "-", "-", self.unit, cpu, self.raw, self.note or "not run"]
        med, low, high = statistics.median(self.values), min(self.values), max(self.values)
        return [self.what, _num(med), _num(low), _num(high), self.unit, cpu, self.raw, self.note]


@dataclass
class Bench:
    postgres: PostgresService
    azurite: AzuriteService
    sizes: Sizes
    runs: int
    figures: list[Figure] = field(default_factory=list)
    limits: dict[str, float] = field(default_factory=dict)
    e2e_rates: dict[int, float] = field(default_factory=dict)
    big_jobs: list[str] = field(default_factory=list)
    gap_counts: dict[str, int] = field(default_factory=dict)
    cpu_ms: float | None = None  # the machine's speed as the current row starts

    def figure(self, what: str, unit: str) -> Figure:
        fig = Figure(what, unit, cpu_ms=self.cpu_ms)
        self.figures.append(fig)
        return fig

    def env(self, dsn: str) -> dict[str, str]:
        return host_env(dsn, self.azurite.connection_string, secrets.token_hex(3))

    def database(self) -> AbstractContextManager[str]:
        return scratch_database(self.postgres.dsn)

    def raw(self) -> None:
        send = self.figure("raw Azurite send, 16 threads", "msg/s")
        recv = self.figure("raw Azurite receive(32)+delete, 16 threads", "msg/s")
        commits = self.figure("raw PostgreSQL commits, 8 connections", "commit/s")
        with self.database() as dsn:
            for _ in range(self.runs):
                send.values.append(
                    raw_limits.azurite_send(self.azurite.connection_string, self.sizes.raw_messages)
                )
                recv.values.append(
                    raw_limits.azurite_receive_delete(
                        self.azurite.connection_string, self.sizes.raw_messages
                    )
                )
                commits.values.append(raw_limits.postgres_commits(dsn, self.sizes.commits))
        for key, fig in (("send", send), ("receive", recv), ("commit", commits)):
            self.limits[key] = statistics.median(fig.values)
            fig.raw = "(the limit)"

    def http(self) -> None:
        kept = self.figure("GET /api/health p50, keep-alive connection", "ms")
        fresh = self.figure("GET /api/health p50, new connection each request", "ms")
        with self.database() as dsn:
            migrate(dsn, "lightsout")
            with hosts(1, self.env(dsn), ("--functions", "http")) as started:
                for _ in range(self.runs):
                    for fig, keep in ((kept, True), (fresh, False)):
                        took = workloads.health_latencies(started[0].url, 200, keep)
                        fig.values.append(1000 * statistics.median(took))
        kept.raw = f"new connection: {_num(statistics.median(fresh.values))} ms"
        fresh.raw = "(the reference)"

    def e2e(self) -> None:
        n = self.sizes.fanout
        for count in (1, 2):
            fig = self.figure(f"noop_fanout {n:,} x 2, {count} host{'s' * (count > 1)}", "tasks/s")
            with self.database() as dsn:
                migrate(dsn, "lightsout")
                with hosts(count, self.env(dsn)) as started:
                    for run in range(self.runs):
                        took = workloads.fanout(started[0].url, n, 2, f"e2e{count}-{run}")
                        fig.values.append(2 * n / took.seconds)
                        self.big_jobs.append(took.job_id)
                    self._transitions_of(dsn, n, self.big_jobs[-self.runs :])
            self.e2e_rates[count] = statistics.median(fig.values)
            fig.raw = self._queue_ceiling()
            fig.note = self._ratio(
                self.e2e_rates[count], "receive", "x the 1-task-per-message ceiling"
            )

    def _transitions_of(self, dsn: str, n: int, job_ids: list[str]) -> None:
        gaps = sorted(workloads.transition_latencies(dsn, job_ids))
        if gaps:
            self._gap_figures(n, [gaps])

    def _gap_figures(self, n: int, per_run: list[list[float]]) -> None:
        existing = {f.what: f for f in self.figures}
        for label, pick in (("p50", 50.0), ("p99", 99.0)):
            what = f"stage transition N={n:,} {label}"
            fig = existing.get(what) or self.figure(what, "ms")
            fig.values += [1000 * workloads.percentile(sorted(g), pick) for g in per_run if g]
            fig.raw = f"maxPollingInterval 2,000 ms; commit {self._commit_ms()}"
            self.gap_counts[what] = self.gap_counts.get(what, 0) + sum(len(g) for g in per_run)
            fig.note = f"{self.gap_counts[what]} transitions"

    def transitions(self) -> None:
        with self.database() as dsn:
            migrate(dsn, "lightsout")
            with hosts(1, self.env(dsn)) as started:
                for n in self.sizes.transition_sizes:
                    stages, jobs = (10, self.sizes.n10_jobs) if n <= 100 else (5, 1)
                    per_run = []
                    for run in range(self.runs):
                        ids = [
                            workloads.fanout(started[0].url, n, stages, f"tr{n}-{run}-{j}").job_id
                            for j in range(jobs)
                        ]
                        per_run.append(workloads.transition_latencies(dsn, ids))
                    self._gap_figures(n, per_run)

    def submit(self) -> None:
        per_client = self.sizes.submit_per_client
        for label, args, processes in (
            ("HTTP-only host (ingest)", ("--functions", "http"), "1"),
            ("HTTP-only host, 2 worker processes (ingest)", ("--functions", "http"), "2"),
            ("one host running the jobs too", (), "1"),
        ):
            rate = self.figure(f"submissions, 16 clients, {label}", "jobs/s")
            p50 = self.figure(f"  submission latency p50, {label}", "ms")
            p99 = self.figure(f"  submission latency p99, {label}", "ms")
            env = {"FUNCTIONS_WORKER_PROCESS_COUNT": processes}
            with self.database() as dsn:
                migrate(dsn, "lightsout")
                with hosts(1, {**self.env(dsn), **env}, args) as started:
                    # Not measured: each worker process makes its runtime (pool, queue
                    # clients) on its first request.
                    workloads.submissions(started[0].url, 16, 5, secrets.token_hex(4))
                    for _ in range(self.runs):
                        got = workloads.submissions(
                            started[0].url, 16, per_client, secrets.token_hex(4)
                        )
                        rate.values.append(got.rate)
                        p50.values.append(got.p50_ms)
                        p99.values.append(got.p99_ms)
            rate.raw = (
                f"Azurite send {self._limit('send')} msg/s; commits {self._limit('commit')}/s"
            )

    def stage100k(self) -> None:
        n = self.sizes.big_stage
        took = self.figure(f"one stage of {n:,} no-op tasks, 1 host", "s")
        rss = self.figure("  host peak RSS in that run", "MB")
        for run in range(self.runs):
            with self.database() as dsn:
                migrate(dsn, "lightsout")
                with hosts(1, self.env(dsn)) as started:
                    took.values.append(workloads.fanout(started[0].url, n, 1, f"big{run}").seconds)
                    rss.values.append(started[0].peak_rss_mb())
        took.raw = self._queue_ceiling(n)
        took.note = f"{n / statistics.median(took.values):,.0f} tasks/s"

    def history(self) -> None:
        n, loaded = self.sizes.fanout, self.sizes.history
        base = self.figure(f"noop_fanout {n:,} x 2, 2 hosts, empty database (baseline)", "tasks/s")
        fig = self.figure(
            f"noop_fanout {n:,} x 2, 2 hosts, {loaded:,} finished tasks loaded", "tasks/s"
        )
        # The baseline runs right before the loaded runs, on a database of its own: the
        # machine's speed moves over minutes, so the e2e row's figure is no fair reference.
        with self.database() as dsn:
            migrate(dsn, "lightsout")
            with hosts(2, self.env(dsn)) as started:
                for run in range(self.runs):
                    took = workloads.fanout(started[0].url, n, 2, f"base{run}").seconds
                    base.values.append(2 * n / took)
        with self.database() as dsn:
            migrate(dsn, "lightsout")
            started_load = time.monotonic()
            workloads.load_history(dsn, loaded)
            load_s = time.monotonic() - started_load
            with hosts(2, self.env(dsn)) as started:
                for run in range(self.runs):
                    took = workloads.fanout(started[0].url, n, 2, f"hist{run}").seconds
                    fig.values.append(2 * n / took)
        empty = statistics.median(base.values)
        base.raw = "(the reference, same row)"
        fig.raw = f"empty database, same row: {_num(empty)} tasks/s"
        fig.note = (
            f"{statistics.median(fig.values) / empty:.2f}x the empty run; loaded in {load_s:.0f} s"
        )

    def celery(self) -> None:
        n, limit = self.sizes.celery_tasks, self.sizes.celery_limit_s
        fig = self.figure(f"Celery chord of {n:,} no-ops on Redis, 2 workers", "tasks/s")
        unfinished = []
        for _ in range(self.runs):
            got = chord_run(n, limit)
            if got.seconds is None:
                unfinished.append(got.done)
            else:
                fig.values.append(n / got.seconds)
        fig.raw = (
            f"Lightsout 1 host: {_num(self.e2e_rates.get(1))} tasks/s"
            if 1 in self.e2e_rates
            else ""
        )
        if unfinished:
            fig.note = (
                f"{len(unfinished)} of {self.runs} runs did not finish in {limit:.0f} s"
                f" (tasks done: {unfinished})"
            )
        elif 1 in self.e2e_rates and fig.values:
            fig.note = f"Lightsout is {self.e2e_rates[1] / statistics.median(fig.values):.1f}x"

    def _queue_ceiling(self, tasks: int | None = None) -> str:
        if "receive" not in self.limits:
            return "run the raw row for the ceiling"
        if tasks is None:
            return f"1 task/msg ceiling {self._limit('receive')} tasks/s"
        return f"1 task/msg ceiling {tasks / self.limits['receive']:,.0f} s"

    def _ratio(self, value: float, limit: str, text: str) -> str:
        return f"{value / self.limits[limit]:.1f}{text}" if limit in self.limits else ""

    def _limit(self, key: str) -> str:
        return _num(self.limits.get(key))

    def _commit_ms(self) -> str:
        rate = self.limits.get("commit")
        return f"{8000 / rate:.1f} ms" if rate else "-"

    def table(self, title: str) -> Table:
        table = Table(title=title)
        columns = (
            "what",
            "median",
            "min",
            "max",
            "unit",
            CPU_COLUMN,
            "raw limit, same run",
            "note",
        )
        for column in columns:
            table.add_column(
                column,
                justify="right" if column in ("median", "min", "max", CPU_COLUMN) else "left",
            )
        table.caption = CPU_CAPTION
        for fig in self.figures:
            table.add_row(*fig.cells())
        return table


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return (
        f"{value:,.0f}"
        if abs(value) >= 100
        else f"{value:,.1f}"
        if abs(value) >= 10
        else f"{value:.2f}"
    )


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lightsout bench", description=__doc__)
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="rows to run")
    parser.add_argument(
        "--runs", type=int, default=None, help="repeats per row (default 3; 1 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of each row")
    parser.add_argument("--celery-limit", type=float, default=None, help="seconds a chord may take")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    sizes = QUICK if args.quick else Sizes()
    if args.celery_limit is not None:
        sizes = Sizes(**{**sizes.__dict__, "celery_limit_s": args.celery_limit})
    runs = args.runs or (1 if args.quick else 3)
    console = Console(width=220)
    postgres, azurite = ensure_postgres(RUN_DIR), ensure_azurite(RUN_DIR)
    bench = Bench(postgres, azurite, sizes, runs)
    steps: dict[str, Callable[[], None]] = {row: getattr(bench, row) for row in ROWS}
    started = time.monotonic()
    try:
        for row in ROWS:
            if row in args.rows:
                bench.cpu_ms = raw_limits.cpu_reference_ms()
                console.log(f"bench: {row} (CPU reference {bench.cpu_ms:.1f} ms)")
                steps[row]()
    finally:
        azurite.stop()
        postgres.stop()
    kind = "quick, " if args.quick else ""
    took = time.monotonic() - started
    title = f"lightsout bench ({kind}{runs} run{'s' * (runs > 1)} per row, {took:.0f} s)"
    console.print(bench.table(title))
    return 0
