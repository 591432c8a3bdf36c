"""A small HTTP client of the Lightsout API, and the progress display of `submit --wait`."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import TextIO

from schemas.records import Json

FINISHED = {"completed", "completed_with_errors", "failed", "cancelled"}
BAR_WIDTH = 30


class ApiError(Exception):
    """The API answered with an error, or did not answer."""


class ApiClient:
    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: object | None = None) -> tuple[int, Json]:
        """Send a request; return (status, JSON body) for any answer, raise ApiError if none."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.base_url}/api/{path}", data, {"Content-Type": "application/json"}, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.status, _json(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise ApiError(f"no answer from {self.base_url}: {exc}") from exc

    def submit(self, job_type: str, params: Json) -> Json:
        status, body = self.request("POST", f"jobs/{job_type}", params)
        return _ok(status, body)

    def job(self, job_id: str) -> Json:
        status, body = self.request("GET", f"jobs/{job_id}")
        return _ok(status, body)


def _json(raw: bytes) -> Json:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {"message": raw.decode(errors="replace")}
    return value if isinstance(value, dict) else {"value": value}


def _ok(status: int, body: Json) -> Json:
    if status >= 400:
        fields = "; ".join(
            f"{'.'.join(map(str, f['loc']))}: {f['msg']}" for f in body.get("fields", [])
        )
        raise ApiError(
            f"HTTP {status} {body.get('error', '')}: {body.get('message', '')} {fields}".strip()
        )
    return body


def parse_assignments(pairs: Sequence[str]) -> Json:
    """Turn `key=value` words into an object; values that parse as JSON are taken as JSON."""
    params: Json = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ApiError(f"{pair!r} is not key=value")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def render(job: Json) -> list[str]:
    """Return one progress line per stage of the job."""
    lines = []
    for stage in job.get("stages", []):
        total, done = stage["task_count"], stage["completed"] + stage["failed"]
        filled = (
            BAR_WIDTH * done // total
            if total
            else (BAR_WIDTH if stage["status"] != "pending" else 0)
        )
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        failed = f", {stage['failed']} failed" if stage["failed"] else ""
        label = f"stage {stage['stage']} {stage['name']:<12}"
        lines.append(f"  {label} [{bar}] {done}/{total}{failed}  {stage['status']}")
    return lines


def watch(client: ApiClient, job_id: str, timeout_s: float, out: TextIO) -> Json:
    """Poll the job until it ends, drawing its stages' progress; return the final job."""
    deadline, shown, last = time.monotonic() + timeout_s, 0, None
    tty = out.isatty()
    while True:
        job = client.job(job_id)
        lines = render(job)
        if lines != last:
            if tty and shown:
                out.write(f"\x1b[{shown}F\x1b[J")
            out.write("\n".join(lines) + "\n")
            out.flush()
            shown, last = len(lines), lines
        if job["status"] in FINISHED:
            break
        if time.monotonic() > deadline:
            raise ApiError(f"job {job_id} still {job['status']} after {timeout_s:.0f} s")
        time.sleep(0.5)
    out.write(f"job {job_id}: {job['status']}\n")
    detail = job.get("result") if job["status"] != "failed" else job.get("error")
    out.write(json.dumps(detail, indent=2) + "\n")
    return job
