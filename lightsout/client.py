"""A small HTTP client of the Lightsout API (the command line's and the demo's)."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence

from schemas.records import Json

FINISHED = {"completed", "completed_with_errors", "failed", "cancelled"}
KEY_HEADER = "x-functions-key"


class ApiError(Exception):
    """The API answered with an error, or did not answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    """Requests to one Lightsout app; `key` is sent as x-functions-key (an API key)."""

    def __init__(self, base_url: str, timeout_s: float = 30.0, key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s, self.key = timeout_s, key

    def request(
        self,
        method: str,
        path: str,
        body: object | None = None,
        query: Mapping[str, object | None] | None = None,
    ) -> tuple[int, Json]:
        """Send a request; return (status, JSON body) for any answer, raise ApiError if none."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers[KEY_HEADER] = self.key
        req = urllib.request.Request(self._url(path, query), data, headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.status, _json(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise ApiError(f"no answer from {self.base_url}: {exc}") from exc
        except http.client.HTTPException as exc:
            # The server went away mid-answer (headers sent, body cut off): no answer either.
            raise ApiError(f"answer from {self.base_url} cut off: {exc!r}") from exc

    def get(self, path: str, **query: object | None) -> Json:
        """GET a route; raise ApiError for an error answer."""
        return _ok(*self.request("GET", path, query=query))

    def post(self, path: str, body: object | None = None, **query: object | None) -> Json:
        """POST to a route; raise ApiError for an error answer."""
        return _ok(*self.request("POST", path, body, query=query))

    def submit(self, job_type: str, params: Json) -> Json:
        return self.post(f"jobs/{_segment(job_type)}", params)

    def job(self, job_id: str) -> Json:
        return self.get(f"jobs/{_segment(job_id)}")

    def _url(self, path: str, query: Mapping[str, object | None] | None) -> str:
        pairs = {k: str(v) for k, v in (query or {}).items() if v is not None and v != ""}
        suffix = f"?{urllib.parse.urlencode(pairs)}" if pairs else ""
        return f"{self.base_url}/api/{path}{suffix}"


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _json(raw: bytes) -> Json:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {"message": raw.decode(errors="replace")}
    return value if isinstance(value, dict) else {"value": value}


def _ok(status: int, body: Json) -> Json:
    if status >= 400:
        fields = "; ".join(
            f"{'.'.join(map(str, f['loc']))}: {f['msg']}" for f in body.get("fields", [])
        )
        hint = " (set LIGHTSOUT_API_KEY or --key)" if status == 401 else ""
        detail = ": ".join(w for w in (body.get("error"), body.get("message"), fields) if w)
        raise ApiError(f"HTTP {status} {detail}".rstrip() + hint, status)
    return body


def parse_assignments(pairs: Sequence[str]) -> Json:
    """Turn `key=value` words into an object; values that parse as JSON are taken as JSON."""
    params: Json = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ApiError(f"{pair!r} is not key=value")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params
