"""Which kinds of function one host serves: Azure Functions scales HTTP and queues apart.

`python -m lightsout host --functions queues,timers` makes a worker host and
`--functions http` an API host; several of each against one database and one storage
account is the scale-out on plain machines. All kinds are served by default.
"""

from __future__ import annotations

from collections.abc import Iterable

from lightsout.host.discovery import AnyFunction, HttpFunction, QueueFunction, TimerFunction
from lightsout.host.errors import HostConfigError

KINDS = {"http": HttpFunction, "queues": QueueFunction, "timers": TimerFunction}
ALL_KINDS = frozenset(KINDS)


def parse_kinds(text: str) -> frozenset[str]:
    """Parse 'http', 'queues,timers' or 'http|queues' into kinds; raise naming a bad one."""
    kinds = frozenset(part.strip() for part in text.replace("|", ",").split(",") if part.strip())
    unknown = sorted(kinds - ALL_KINDS)
    if unknown or not kinds:
        raise HostConfigError(
            f"--functions takes {', '.join(sorted(KINDS))} (any combination), got {text!r}"
        )
    return kinds


def served(functions: Iterable[AnyFunction], kinds: frozenset[str]) -> list[AnyFunction]:
    """The functions of the given kinds."""
    wanted = tuple(KINDS[kind] for kind in kinds)
    return [f for f in functions if isinstance(f, wanted)]
