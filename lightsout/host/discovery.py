"""Import a v2-model function_app.py and describe the functions it declares."""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from azstorage import StorageConnection
from lightsout.host.errors import HostConfigError
from lightsout.host.settings import resolve, storage_connection

APP_MODULE = "function_app"
# Azure queue names: 3-63 lowercase letters, digits and single hyphens, no hyphen at an end.
_QUEUE_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class FunctionSpec:
    """A function, its trigger argument and whether it takes the `context` argument."""

    name: str
    func: Callable[..., Any]
    arg_name: str
    wants_context: bool
    directory: str


@dataclass(frozen=True)
class HttpFunction(FunctionSpec):
    route: str
    methods: frozenset[str] | None  # None: every method


@dataclass(frozen=True)
class QueueFunction(FunctionSpec):
    queue_name: str
    connection: StorageConnection


@dataclass(frozen=True)
class TimerFunction(FunctionSpec):
    schedule: str
    run_on_startup: bool


AnyFunction = HttpFunction | QueueFunction | TimerFunction


class _Binding(BaseModel):
    """One entry of a function's function.json "bindings"."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    type: str
    name: str
    direction: str = "IN"
    route: str | None = None
    methods: list[str] | None = None
    queue_name: str | None = Field(None, alias="queueName")
    connection: str | None = None
    schedule: str | None = None
    run_on_startup: bool | None = Field(None, alias="runOnStartup")


def load_app(app_dir: Path) -> func.FunctionApp:
    """Import app_dir/function_app.py afresh and return its `app`."""
    path = app_dir / f"{APP_MODULE}.py"
    if not path.exists():
        raise HostConfigError(f"{path} not found: the app directory must hold {APP_MODULE}.py")
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    spec = importlib.util.spec_from_file_location(APP_MODULE, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[APP_MODULE] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise HostConfigError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    app = getattr(module, "app", None)
    if not isinstance(app, func.FunctionApp):
        raise HostConfigError(f"{path} must define `app = func.FunctionApp(...)`")
    return app


def discover(app: func.FunctionApp, environ: Mapping[str, str], app_dir: Path) -> list[AnyFunction]:
    """Describe each function of `app`, with %NAME% expressions resolved from `environ`.

    `app.get_functions()` may be called once per app object: it fails on a second call.
    """
    return [_describe(fn, environ, app_dir) for fn in app.get_functions()]


def _describe(fn: Any, environ: Mapping[str, str], app_dir: Path) -> AnyFunction:
    name: str = fn.get_function_name()
    bindings = [_Binding.model_validate(b) for b in json.loads(fn.get_function_json())["bindings"]]
    trigger, others = _split_trigger(name, bindings)
    if others:
        kinds = ", ".join(f"{b.type} {b.name!r}" for b in others)
        raise HostConfigError(f"function {name!r} has bindings the local host lacks: {kinds}")
    user_func: Callable[..., Any] = fn.get_user_function()
    common = _common(name, user_func, trigger.name, str(app_dir))
    where = f"function {name!r}"
    if trigger.type == "httpTrigger":
        methods = frozenset(m.upper() for m in trigger.methods) if trigger.methods else None
        return HttpFunction(**common, route=trigger.route or name, methods=methods)
    if trigger.type == "queueTrigger":
        queue = resolve(trigger.queue_name or "", environ, f"{where} queue_name")
        if not _QUEUE_NAME.match(queue):
            raise HostConfigError(f"{where}: {queue!r} is not a valid queue name")
        conn = storage_connection(trigger.connection, environ, where)
        return QueueFunction(**common, queue_name=queue, connection=conn)
    if trigger.type == "timerTrigger":
        schedule = resolve(trigger.schedule or "", environ, f"{where} schedule")
        return TimerFunction(
            **common, schedule=schedule, run_on_startup=bool(trigger.run_on_startup)
        )
    raise HostConfigError(f"{where}: trigger {trigger.type!r} is not supported by the local host")


def _split_trigger(name: str, bindings: list[_Binding]) -> tuple[_Binding, list[_Binding]]:
    """Return the trigger and the bindings besides it (an HTTP function's response aside)."""
    triggers = [b for b in bindings if b.type.endswith("Trigger")]
    if len(triggers) != 1:
        raise HostConfigError(f"function {name!r} must have exactly one trigger")
    others = [b for b in bindings if b is not triggers[0] and not _is_http_response(b)]
    return triggers[0], others


def _is_http_response(binding: _Binding) -> bool:
    return binding.type == "http" and binding.direction == "OUT"


def _common(
    name: str, user_func: Callable[..., Any], arg_name: str, app_dir: str
) -> dict[str, Any]:
    params = inspect.signature(user_func).parameters
    if arg_name not in params:
        raise HostConfigError(f"function {name!r} has no parameter {arg_name!r} for its trigger")
    return {
        "name": name,
        "func": user_func,
        "arg_name": arg_name,
        "wants_context": "context" in params,
        "directory": app_dir,
    }
