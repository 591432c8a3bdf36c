"""Read a request's parameters and JSON body, refusing what would break the layers behind.

Each refusal is a 4xx naming the problem, never a 500: nesting deeper than MAX_DEPTH
(the parser recurses, 5,000 levels raised RecursionError), a NUL character in a string
(PostgreSQL's jsonb cannot store it), and integers past JSON's safe range (JavaScript
clients and many JSON libraries silently round them).
"""

from __future__ import annotations

import json

import azure.functions as func

from schemas.exceptions import InvalidParameters
from schemas.http import MAX_BODY_BYTES
from triggers.responses import BadRequest, PayloadTooLarge

MAX_DEPTH = 64
SAFE_INT = 2**53 - 1
MAX_REPORTED = 20
Loc = tuple[str | int, ...]


def check_params(req: func.HttpRequest) -> None:
    """Raise BadRequest for a NUL character in a query or route parameter or a header.

    PostgreSQL's text holds none, and a header's value may reach it (X-Lightsout-Actor).
    """
    for kind, params in (("query", req.params), ("route", req.route_params)):
        for name, value in params.items():
            if "\x00" in name or "\x00" in value:
                raise BadRequest(f"{kind} parameter {name!r} contains a NUL character")
    for name, value in req.headers.items():
        if "\x00" in value:
            raise BadRequest(f"header {name!r} contains a NUL character")


def json_body(req: func.HttpRequest) -> object:
    """Return the parsed JSON body (an empty body is an empty object)."""
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}")
    if not raw.strip():
        return {}
    return parse_json(raw)


def parse_json(raw: bytes) -> object:
    """Return the parsed document, or raise BadRequest / InvalidParameters naming the field."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise BadRequest(f"body nests deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    problems = _problems(value)
    if problems:
        names = ", ".join(_dotted(p["loc"]) for p in problems)
        raise InvalidParameters(f"invalid values at {names}", problems)
    return value


def _problems(document: object) -> list[dict[str, object]]:
    """Walk the document without recursion; raise BadRequest when it nests too deep."""
    problems: list[dict[str, object]] = []
    stack: list[tuple[object, Loc]] = [(document, ())]
    while stack and len(problems) < MAX_REPORTED:
        value, loc = stack.pop()
        # A container inside len(loc) others is at level len(loc) + 1.
        if isinstance(value, dict | list) and len(loc) >= MAX_DEPTH:
            raise BadRequest(f"body nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    problems.append(_nul((*loc, key), "key"))
                stack.append((item, (*loc, key)))
        elif isinstance(value, list):
            stack.extend((item, (*loc, n)) for n, item in enumerate(value))
        elif isinstance(value, str) and "\x00" in value:
            problems.append(_nul(loc, "string"))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > SAFE_INT:
            problems.append(
                {
                    "loc": list(loc),
                    "msg": f"integer is outside JSON's safe range of ±{SAFE_INT}",
                    "type": "int_unsafe",
                }
            )
    return problems


def _dotted(loc: object) -> str:
    return ".".join(str(part) for part in loc) if isinstance(loc, list) and loc else "body"


def _nul(loc: Loc, what: str) -> dict[str, object]:
    return {"loc": list(loc), "msg": f"NUL characters are not allowed in a {what}", "type": "nul"}
