"""What every command shares: its parser's help, the API client, and the output helpers."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from lightsout.client import ApiClient
from schemas.records import Json

DEFAULT_URL = "http://127.0.0.1:7071"
API_ENV = (
    "environment: LIGHTSOUT_URL (the app's base URL, default http://127.0.0.1:7071), "
    "LIGHTSOUT_API_KEY (an API key, sent as the x-functions-key header)"
)
Run = Callable[[argparse.Namespace], int]
PIPE_WIDTH = 200  # rows stay whole when the output goes to a file or another program


def console() -> Console:
    """A console on the current stdout: the terminal's width, or PIPE_WIDTH when piped."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else PIPE_WIDTH)


class UsageError(Exception):
    """The command was given a combination of arguments it cannot act on."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default, except where there is none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def command(
    sub: Any, name: str, help: str, run: Run, *, api: bool = True, epilog: str | None = None
) -> argparse.ArgumentParser:
    """Add a command; with `api`, it takes --url and --key and its help names their variables."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=help,
        formatter_class=HelpFormatter,
        epilog=" ".join(p for p in (epilog, API_ENV if api else None) if p) or None,
    )
    parser.set_defaults(run=run)
    if api:
        parser.add_argument(
            "--url", help=f"the app's base URL (default: $LIGHTSOUT_URL, else {DEFAULT_URL})"
        )
        parser.add_argument("--key", help="API key (default: $LIGHTSOUT_API_KEY)")
    return parser


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the API's answer as JSON")


def client(args: argparse.Namespace, timeout_s: float = 30.0) -> ApiClient:
    url = args.url or os.environ.get("LIGHTSOUT_URL") or DEFAULT_URL
    key = args.key or os.environ.get("LIGHTSOUT_API_KEY") or None
    return ApiClient(url, timeout_s, key)


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


def table(
    columns: Sequence[str], rows: Iterable[Sequence[object]], title: str | None = None
) -> Table:
    """A borderless table of rows, each value shown as text ("" for None)."""
    out = Table(box=None, pad_edge=False, title=title, title_justify="left")
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*("" if v is None else str(v) for v in row))
    return out


def when(stamp: object) -> str:
    """An ISO timestamp as `YYYY-MM-DD HH:MM:SS` (UTC as the API gives it)."""
    return "" if stamp is None else str(stamp).replace("T", " ")[:19]


def short(job_id: object) -> str:
    """A job id cut to 12 characters, enough to recognise it (commands take the full id)."""
    return str(job_id)[:12]


def next_page(body: Json) -> None:
    if body.get("next_cursor"):
        console().print(f"more: --cursor {body['next_cursor']}")
