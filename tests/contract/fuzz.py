"""The published contract, fuzzed: schemathesis against a local host, with and without a key.

`python -m tests.contract.fuzz` (called by .ci/run) starts a host serving only the HTTP
functions (the queue and timer functions are disabled, so generated jobs are recorded but
never run), then runs schemathesis twice over every operation of /api/openapi.json:
with a key holding every scope, checking not_a_server_error, status_code_conformance and
response_schema_conformance; and without credentials, checking that each protected
operation answers 401. It prints how many requests each run sent and exits non-zero on
any failure, or when fewer than MIN_REQUESTS were generated.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
from psycopg import sql

from lightsout.devservices import ensure_azurite, ensure_postgres, free_port
from lightsout.keys import new_key

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = REPO_ROOT / ".run"
MIN_REQUESTS = 2000
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
NOT_HTTP = ["jobs_queue", "tasks_queue", "jobs_poison", "tasks_poison", "janitor"]
OPEN_OPERATIONS = ["health", "openapi"]


def host_env(dsn: str, storage: str, tag: str, keys_entry: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTSOUT_")}
    env.update(
        DATABASE_URL=dsn,
        AzureWebJobsStorage=storage,
        LIGHTSOUT_SCHEMA=f"lightsout_{tag}",
        LIGHTSOUT_JOBS_QUEUE=f"{tag}-jobs",
        LIGHTSOUT_TASKS_QUEUE=f"{tag}-tasks",
        LIGHTSOUT_API_KEYS=keys_entry,
        LIGHTSOUT_SELFTEST_JOB_TYPES="true",
        PYTHONUNBUFFERED="1",
    )
    env.update({f"AzureWebJobs.{name}.Disabled": "true" for name in NOT_HTTP})
    return env


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the host exited with {proc.returncode}:\n{log.read_text()}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/api/health", timeout=5) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.3)
    raise SystemExit(f"the host is not healthy after 60 s:\n{log.read_text()}")


def schemathesis(url: str, report: Path, args: list[str], env: dict[str, str] | None = None) -> int:
    """Run `st run` over the host's document; return its exit code."""
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{url}/api/openapi.json",
        "--url",
        f"{url}/api",
        "--report",
        "har,json",
        "--report-har-path",
        str(report),
        "--report-json-path",
        str(report.with_suffix(".json")),
        "--no-color",
        *args,
    ]
    return subprocess.run(command, env=env, check=False).returncode


def figures(har: Path) -> tuple[int, int, int]:
    """(requests sent, test cases generated, unique failures) of a run, from its reports."""
    requests = len(json.loads(har.read_text())["log"]["entries"])
    cases = json.loads(har.with_suffix(".json").read_text())["test_cases"]
    return requests, cases["generated"], cases["unique_failures"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-examples", type=int, default=140, help="per operation")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    tag = f"fuzz{secrets.token_hex(3)}"
    key, keys_entry = new_key("fuzz", ["jobs:read", "jobs:submit", "jobs:admin"])
    postgres, azurite = ensure_postgres(RUN_DIR), ensure_azurite(RUN_DIR)
    RUN_DIR.mkdir(exist_ok=True)
    log = RUN_DIR / f"{tag}-host.log"
    port = free_port()
    env = host_env(postgres.dsn, azurite.connection_string, tag, keys_entry)
    with log.open("wb") as out:
        host = subprocess.Popen(
            [sys.executable, "-m", "lightsout", "host", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, host, log)
        print(f"fuzz: host {url}, seed {seed} (repeat with --seed {seed}), log {log}", flush=True)
        common = ["--seed", str(seed), "--max-examples", str(args.max_examples), "--workers", "1"]
        with_key_report, without_report = (
            RUN_DIR / f"{tag}-with-key.har",
            RUN_DIR / f"{tag}-without-key.har",
        )
        with_key = schemathesis(
            url,
            with_key_report,
            [*common, "--checks", CHECKS, "-H", f"x-functions-key: {key}"],
        )
        hooks = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.contract.unauthenticated"}
        excluded = [a for op in OPEN_OPERATIONS for a in ("--exclude-operation-id", op)]
        without = schemathesis(
            url,
            without_report,
            ["--seed", str(seed), "--max-examples", "5", "--checks", "answers_401", *excluded],
            env=hooks,
        )
    finally:
        host.send_signal(signal.SIGTERM)
        try:
            host.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(host.pid, signal.SIGKILL)
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            schema = sql.Identifier(f"lightsout_{tag}")
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
        postgres.stop()
        azurite.stop()
    ok = True
    for label, report, code in (
        ("with a key", with_key_report, with_key),
        ("without credentials", without_report, without),
    ):
        requests, cases, failures = figures(report)
        counts = f"{requests} requests, {cases} test cases, {failures} failures"
        print(f"fuzz: {label}: {counts} (exit {code})")
        ok = ok and code == 0
    sent = figures(with_key_report)[0]
    if sent < MIN_REQUESTS:
        print(f"fuzz: only {sent} requests with a key; at least {MIN_REQUESTS} are required")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
