"""A local Azure Functions host for any v2-model `function_app.py`.

It serves the app's HTTP routes, polls its queue triggers and runs its timers with the
Functions host's semantics (host.json queue settings, poison queues, %SETTING%
expressions, local.settings.json). It knows nothing of the app it serves.
"""

from lightsout.host.discovery import (
    AnyFunction,
    HttpFunction,
    QueueFunction,
    TimerFunction,
    discover,
    load_app,
)
from lightsout.host.errors import HostConfigError
from lightsout.host.hostjson import HostJson, QueuesOptions, load_host_json, parse_timespan
from lightsout.host.ncrontab import CronSchedule
from lightsout.host.ncrontab import parse as parse_ncrontab
from lightsout.host.routing import Router
from lightsout.host.runtime import Host, serve
from lightsout.host.settings import load_local_settings, resolve

__all__ = [
    "AnyFunction",
    "CronSchedule",
    "Host",
    "HostConfigError",
    "HostJson",
    "HttpFunction",
    "QueueFunction",
    "QueuesOptions",
    "Router",
    "TimerFunction",
    "discover",
    "load_app",
    "load_host_json",
    "load_local_settings",
    "parse_ncrontab",
    "parse_timespan",
    "resolve",
    "serve",
]
