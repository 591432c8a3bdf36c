"""HTTP route templates ("jobs/{job_id}", "files/{*path}", "items/{id:int?}") and matching."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import unquote

from lightsout.host.errors import HostConfigError

T = TypeVar("T")
_PARAM = re.compile(r"^\{(\*{1,2})?([A-Za-z_][A-Za-z0-9_]*)((?::[a-z]+)*)(\?)?\}$")


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


CONSTRAINTS: dict[str, Callable[[str], bool]] = {
    "int": lambda s: re.fullmatch(r"-?\d+", s) is not None,
    "long": lambda s: re.fullmatch(r"-?\d+", s) is not None,
    "bool": lambda s: s.lower() in ("true", "false"),
    "alpha": lambda s: re.fullmatch(r"[A-Za-z]+", s) is not None,
    "guid": _is_guid,
    "double": _is_float,
    "float": _is_float,
    "decimal": _is_float,
}


@dataclass(frozen=True)
class Segment:
    """A literal segment, or a parameter: optional, constrained or catch-all."""

    literal: str | None = None
    name: str = ""
    constraints: tuple[str, ...] = ()
    optional: bool = False
    catch_all: bool = False

    @property
    def rank(self) -> int:
        """Lower ranks win: literal, constrained, plain, optional parameter, catch-all."""
        if self.literal is not None:
            return 0
        if self.catch_all:
            return 4
        return 3 if self.optional else (1 if self.constraints else 2)

    def accepts(self, value: str) -> bool:
        return all(CONSTRAINTS[c](value) for c in self.constraints)


def split_path(path: str) -> list[str]:
    return [s for s in path.strip("/").split("/") if s]


def parse_template(template: str) -> tuple[Segment, ...]:
    """Parse a route template; raise HostConfigError naming what is wrong."""
    segments = tuple(_parse_segment(template, raw) for raw in split_path(template))
    for i, seg in enumerate(segments):
        rest = segments[i + 1 :]
        if seg.catch_all and rest:
            raise HostConfigError(f"route {template!r}: a catch-all parameter must come last")
        if seg.optional and any(not (s.optional or s.catch_all) for s in rest):
            raise HostConfigError(f"route {template!r}: only the last parameters may be optional")
    return segments


def _parse_segment(template: str, raw: str) -> Segment:
    if "{" not in raw and "}" not in raw:
        return Segment(literal=raw)
    match = _PARAM.match(raw)
    if match is None:
        raise HostConfigError(f"route {template!r}: segment {raw!r} is not supported")
    star, name, constraint_text, optional = match.groups()
    constraints = tuple(c for c in constraint_text.split(":") if c)
    unknown = [c for c in constraints if c not in CONSTRAINTS]
    if unknown:
        raise HostConfigError(f"route {template!r}: unknown constraint(s) {unknown}")
    return Segment(
        name=name, constraints=constraints, optional=bool(optional), catch_all=bool(star)
    )


def match_segments(template: Sequence[Segment], path: Sequence[str]) -> dict[str, str] | None:
    """Return the route parameters if `path` (decoded segments) fits `template`, else None."""
    params: dict[str, str] = {}
    for i, seg in enumerate(template):
        if seg.catch_all:
            params[seg.name] = "/".join(path[i:])
            return params
        if i >= len(path):
            return params if seg.optional else None
        value = path[i]
        if seg.literal is not None:
            if value.casefold() != seg.literal.casefold():
                return None
        elif seg.accepts(value):
            params[seg.name] = value
        else:
            return None
    return params if len(path) == len(template) else None


@dataclass(frozen=True)
class Route(Generic[T]):
    template: str
    segments: tuple[Segment, ...]
    methods: frozenset[str] | None
    target: T

    def allows(self, method: str) -> bool:
        return self.methods is None or method in self.methods


@dataclass(frozen=True)
class RouteMatch(Generic[T]):
    target: T
    params: dict[str, str]


@dataclass(frozen=True)
class MethodNotAllowed:
    allowed: frozenset[str]


class Router(Generic[T]):
    """Match request paths under a prefix ("api") to the most specific route template."""

    def __init__(self, prefix: str, routes: Iterable[tuple[str, frozenset[str] | None, T]]) -> None:
        self.prefix = split_path(prefix)
        built = [Route(t, parse_template(t), m, target) for t, m, target in routes]
        self.routes = sorted(built, key=lambda r: tuple(s.rank for s in r.segments))

    def match(self, method: str, raw_path: str) -> RouteMatch[T] | MethodNotAllowed | None:
        """Find the route for `method` and the undecoded URL path `raw_path`."""
        path = [unquote(s) for s in split_path(raw_path)]
        head = path[: len(self.prefix)]
        if [s.casefold() for s in head] != [s.casefold() for s in self.prefix]:
            return None
        path = path[len(self.prefix) :]
        allowed: set[str] = set()
        for route in self.routes:
            params = match_segments(route.segments, path)
            if params is None:
                continue
            if route.allows(method):
                return RouteMatch(route.target, params)
            allowed |= route.methods or set()
        return MethodNotAllowed(frozenset(allowed)) if allowed else None
