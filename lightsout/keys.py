"""`lightsout keys new`: a fresh API key and the LIGHTSOUT_API_KEYS entry that holds it."""

from __future__ import annotations

import json
import secrets

from schemas.auth import Scope

KEY_BYTES = 32  # 43 URL-safe characters, well past the 24 the settings require


def new_key(name: str, scopes: list[str]) -> tuple[str, str]:
    """Return a new key and its settings entry; raise ValueError for an unknown scope."""
    known = {s.value for s in Scope}
    unknown = [s for s in scopes if s not in known]
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {', '.join(sorted(known))}; got {scopes}")
    key = secrets.token_urlsafe(KEY_BYTES)
    entry = json.dumps({name: {"key": key, "scopes": sorted(set(scopes))}})
    return key, entry


def print_new_key(name: str, scopes_csv: str) -> int:
    """Print a new key for `name` with the comma-separated scopes, and how to use it."""
    scopes = [s.strip() for s in scopes_csv.split(",") if s.strip()]
    try:
        key, entry = new_key(name, scopes)
    except ValueError as exc:
        raise SystemExit(f"lightsout keys new: {exc}") from None
    print(f"key:     {key}")
    print(f"setting: LIGHTSOUT_API_KEYS='{entry}'")
    print("(merge the entry into LIGHTSOUT_API_KEYS if it holds other keys already)")
    print(f"use:     curl -H 'x-functions-key: {key}' http://127.0.0.1:7071/api/jobs")
    return 0
