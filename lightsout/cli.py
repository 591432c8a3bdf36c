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
    # Listed for --help; main() hands its arguments to bench/suite.py untouched.
    sub.add_parser(
        "bench",
        help="run the benchmarks (bench/suite.py)",
        description="Run the benchmarks of bench/suite.py (`bench --help` lists their options)"
        " against the PostgreSQL of DATABASE_URL when it answers, else one it starts; it"
        " starts its own Azurite and hosts, with authentication on.",
        add_help=False,
    )
    return top


def _bench(argv: Sequence[str]) -> int:
    from bench.suite import main as bench_main  # the bench ships with the repository only

    return bench_main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its options are its own (bench/suite.py)
        return _bench(argv[1:])
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
