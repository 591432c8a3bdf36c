"""API keys: `keys new NAME` prints a fresh key and its LIGHTSOUT_API_KEYS entry."""

from __future__ import annotations

import argparse
from typing import Any

from lightsout.commands.common import command
from lightsout.keys import print_new_key


def register(sub: Any) -> None:
    keys = command(
        sub,
        "keys",
        "make API keys: `keys new NAME --scopes jobs:read,jobs:submit`",
        _keys,
        api=False,
        epilog="The key is printed once; the app reads it from LIGHTSOUT_API_KEYS.",
    )
    keys.add_argument("action", choices=("new",))
    keys.add_argument("name", help="the key's name, recorded as the actor api-key:NAME")
    keys.add_argument("--scopes", default="jobs:read,jobs:submit", help="comma-separated")


def _keys(args: argparse.Namespace) -> int:
    return print_new_key(args.name, args.scopes)
