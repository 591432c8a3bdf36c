"""TEMP auth shim (drop on merge): the auth branch provides the real `protected(scope)`."""

from __future__ import annotations

import functools
from collections.abc import Callable

import azure.functions as func

from schemas.auth import Identity, Scope
from triggers.responses import Handler, answer_errors

AuthedHandler = Callable[[func.HttpRequest, Identity], func.HttpResponse]
SHIM = Identity(name="shim", kind="auth_off", scopes=frozenset(Scope))


def protected(scope: Scope) -> Callable[[AuthedHandler], Handler]:
    """Pass every request through as the shim identity, with the JSON error mapping."""

    def decorate(handler: AuthedHandler) -> Handler:
        @functools.wraps(handler)
        def wrapper(req: func.HttpRequest) -> func.HttpResponse:
            return handler(req, SHIM)

        return answer_errors(wrapper)

    return decorate
