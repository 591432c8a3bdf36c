"""schemathesis hooks of the run without credentials: every protected operation answers 401."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.check
def answers_401(ctx: Any, response: Any, case: Any) -> bool | None:
    """Fail unless a request without credentials was refused with 401 and a challenge.

    Requests with a method the operation does not declare (schemathesis tries TRACE and
    the like) are answered 405 before any credential is read, so they are not judged here.
    """
    if case.method.upper() != case.operation.method.upper():
        return None
    if response.status_code != 401:
        raise AssertionError(f"answered {response.status_code} without credentials, not 401")
    if "www-authenticate" not in {name.lower() for name in response.headers}:
        raise AssertionError("401 without a WWW-Authenticate header")
    return None
