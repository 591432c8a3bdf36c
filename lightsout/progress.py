"""A job's stages as progress bars: rich on a terminal, one plain line per change elsewhere."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from lightsout.client import FINISHED, ApiClient, ApiError
from schemas.records import Json

BAR_WIDTH = 30
POLL_S = 0.5
ENDED = {"completed", "completed_with_errors", "failed", "cancelled"}
STYLES = {
    "completed": "green",
    "completed_with_errors": "yellow",
    "failed": "red",
    "cancelled": "magenta",
    "processing": "cyan",
}


@dataclass(frozen=True)
class StageCounts:
    """One stage's tasks by outcome, from the job view's per-stage counters."""

    stage: int
    name: str
    status: str
    total: int
    completed: int
    failed: int
    cancelled: int

    @classmethod
    def of(cls, stage: Json) -> StageCounts:
        total, completed, failed = stage["task_count"], stage["completed"], stage["failed"]
        # remaining + completed + failed + cancelled = task_count (a CHECK on job_stages).
        cancelled = max(0, total - completed - failed - stage["remaining"])
        return cls(
            stage["stage"], stage["name"], stage["status"], total, completed, failed, cancelled
        )

    @property
    def done(self) -> int:
        return self.completed + self.failed + self.cancelled

    @property
    def fraction(self) -> float:
        """How full the bar is: a stage without tasks is full only once it has completed."""
        if self.total:
            return self.done / self.total
        return 1.0 if self.status in ("completed", "completed_with_errors") else 0.0

    def detail(self) -> str:
        parts = [
            f"{n} {what}"
            for n, what in ((self.failed, "failed"), (self.cancelled, "cancelled"))
            if n
        ]
        return f"{self.done}/{self.total}" + (f" ({', '.join(parts)})" if parts else "")


def stages_of(job: Json) -> list[StageCounts]:
    return [StageCounts.of(stage) for stage in job.get("stages", [])]


def render(job: Json) -> list[str]:
    """Return one plain progress line per stage of the job."""
    lines = []
    for s in stages_of(job):
        lines.append(f"  stage {s.stage} {s.name:<12} {text_bar(s)} {s.detail()}  {s.status}")
    return lines


def text_bar(counts: StageCounts) -> str:
    filled = round(BAR_WIDTH * counts.fraction)
    return "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]"


def stages_table(job: Json, plain: bool = False) -> Table:
    """Return the job's stages as a table with a bar per stage (`plain`: drawn in text)."""
    table = Table(box=None, pad_edge=False)
    for column in ("stage", "name", "progress", "tasks", "status"):
        table.add_column(column, justify="right" if column in ("stage", "tasks") else "left")
    for s in stages_of(job):
        style = STYLES.get(s.status, "white")
        bar = (
            Text(text_bar(s))
            if plain
            else ProgressBar(
                total=1.0,
                completed=s.fraction,
                width=BAR_WIDTH,
                complete_style=style,
                finished_style=style,
            )
        )
        table.add_row(str(s.stage), s.name, bar, s.detail(), Text(s.status, style=style))
    return table


def outcome(job: Json) -> str:
    """Return the job's final line and its result (or error) as JSON."""
    detail = job.get("error") if job["status"] == "failed" else job.get("result")
    return f"job {job['job_id']}: {job['status']}\n{json.dumps(detail, indent=2)}"


def watch(client: ApiClient, job_id: str, timeout_s: float, out: TextIO) -> Json:
    """Poll the job until it ends, drawing its stages; return the final job.

    On a terminal the bars are redrawn in place; otherwise one line is written per stage
    whose line changed, so a log shows each step once.
    """
    if out.isatty():
        job = _watch_live(client, job_id, timeout_s, out)
    else:
        job = _watch_lines(client, job_id, timeout_s, out)
    out.write(outcome(job) + "\n")
    out.flush()
    return job


def _watch_lines(client: ApiClient, job_id: str, timeout_s: float, out: TextIO) -> Json:
    shown: dict[int, str] = {}
    job: Json = {}
    for job in _polls(client, job_id, timeout_s):
        for number, line in enumerate(render(job)):
            if shown.get(number) != line:
                out.write(line + "\n")
                shown[number] = line
        out.flush()
    return job


def _watch_live(client: ApiClient, job_id: str, timeout_s: float, out: TextIO) -> Json:
    console = Console(file=out)
    job: Json = {}
    with Live(console=console, auto_refresh=False) as live:
        for job in _polls(client, job_id, timeout_s):
            live.update(Group(stages_table(job)), refresh=True)
    return job


def _polls(client: ApiClient, job_id: str, timeout_s: float) -> Iterator[Json]:
    """Yield the job every POLL_S until it ends (the last one yielded has ended)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.job(job_id)
        yield job
        if job["status"] in FINISHED:
            return
        if time.monotonic() > deadline:
            raise ApiError(f"job {job_id} still {job['status']} after {timeout_s:.0f} s")
        time.sleep(POLL_S)
