"""`dev`: PostgreSQL and Azurite for standalone use, kept running until `dev --stop`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lightsout import dev
from lightsout.commands.common import command


def register(sub: Any) -> None:
    parser = command(
        sub,
        "dev",
        "start PostgreSQL and Azurite for local use, migrate, write local.settings.json",
        _dev,
        api=False,
        epilog='Prints `export` lines for this shell on stdout (use: eval "$(python -m '
        'lightsout dev)") and what it did on stderr. environment: DATABASE_URL and '
        "AzureWebJobsStorage are used instead when they answer.",
    )
    parser.add_argument(
        "--stop", action="store_true", help="stop what `dev` started, delete its data"
    )
    parser.add_argument(
        "--app-dir", type=Path, default=dev.APP_DIR, help="where local.settings.json and .run/ go"
    )


def _dev(args: argparse.Namespace) -> int:
    if args.stop:
        return _stop(args.app_dir)
    state = dev.start(args.app_dir, _say)
    values = dev.write_settings(args.app_dir, state)
    _say(f"wrote {dev.SETTINGS_FILE} for the host (API key {dev.KEY_NAME!r}, all scopes)")
    _say("running until `python -m lightsout dev --stop`; the settings:")
    print("\n".join(dev.exports(values)))
    return 0


def _stop(app_dir: Path) -> int:
    state = dev.load_state(app_dir)
    if state is None:
        _say(f"nothing to stop (no {dev.STATE_FILE})")
        return 0
    stopped = dev.stop(app_dir, state)
    _say(f"stopped {', '.join(stopped)}" if stopped else "started nothing; nothing to stop")
    return 0


def _say(text: str) -> None:
    print(f"dev: {text}", file=sys.stderr, flush=True)
