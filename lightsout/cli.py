"""The command line of Lightsout: run the app, and see and steer its jobs over the API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lightsout.client import ApiError
from lightsout.commands import actions, dev, jobs, keys, poison, service, workers
from lightsout.commands.common import UsageError
from schemas.exceptions import LightsoutError

# One module per command group.
GROUPS = (dev, service, jobs, actions, poison, workers, keys)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="lightsout", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except (LightsoutError, ApiError, UsageError) as exc:
        print(f"lightsout {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lightsout {args.command}: interrupted", file=sys.stderr)
        return 130
    return code
