"""`protected(scope)`: the HTTP handlers that need a credential, and the scope it must hold."""

from __future__ import annotations

from collections.abc import Callable

import azure.functions as func

from schemas.auth import Identity, Scope
from triggers.credentials import Unauthenticated
from triggers.inputs import check_params
from triggers.responses import Forbidden, Handler, answer_errors, error_response
from triggers.runtime import runtime

ProtectedHandler = Callable[[func.HttpRequest, Identity], func.HttpResponse]
CHALLENGE = 'Bearer realm="lightsout", ApiKey realm="lightsout", header="x-functions-key"'


def protected(scope: Scope) -> Callable[[ProtectedHandler], Handler]:
    """Call the handler with the caller's identity; 401 without a credential, 403 without scope."""

    def decorate(handler: ProtectedHandler) -> Handler:
        def guarded(req: func.HttpRequest) -> func.HttpResponse:
            try:
                who = runtime().auth.identify(req.headers, req.params)
            except Unauthenticated as exc:
                answer = error_response(401, "unauthorized", str(exc))
                answer.headers["WWW-Authenticate"] = CHALLENGE
                return answer
            require(who, scope)
            check_params(req)
            return handler(req, who)

        # Not functools.wraps: the Functions worker reads the signature, which must stay (req).
        guarded.__name__, guarded.__qualname__ = handler.__name__, handler.__qualname__
        guarded.__doc__, guarded.__module__ = handler.__doc__, handler.__module__
        return answer_errors(guarded)

    return decorate


def require(who: Identity, scope: Scope, what: str | None = None) -> None:
    """Raise Forbidden (403) unless `who` holds `scope`; `what` names the action asked for."""
    if not who.allows(scope):
        action = f" for {what}" if what else ""
        raise Forbidden(f"this credential ({who.actor}) lacks the scope {scope.value}{action}")
