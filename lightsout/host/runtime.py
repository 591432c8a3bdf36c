"""The local host: serve a function app's HTTP, queue and timer functions until stopped."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from types import FrameType, TracebackType

from azstorage import IdentityConnection, StorageConfigError, StorageConnection
from lightsout.host.banner import banner
from lightsout.host.discovery import (
    AnyFunction,
    HttpFunction,
    QueueFunction,
    TimerFunction,
    discover,
    load_app,
)
from lightsout.host.errors import HostConfigError
from lightsout.host.hostjson import HostJson, load_host_json
from lightsout.host.http_server import FunctionHttpServer
from lightsout.host.invoke import Invoker
from lightsout.host.logformat import configure_logging
from lightsout.host.processes import ExtraProcesses, process_count, report_ready, shares_port
from lightsout.host.queue_listener import DEFAULT_LEASE, QueueListener
from lightsout.host.roles import ALL_KINDS, served
from lightsout.host.routing import Router
from lightsout.host.settings import is_disabled, load_local_settings
from lightsout.host.timers import TimerRunner

log = logging.getLogger(__name__)
DEFAULT_GRACE_SECONDS = 30.0


class Host:
    """Everything one `function_app.py` needs served; start() it, then stop() it once."""

    def __init__(
        self,
        app_dir: Path,
        port: int = 7071,
        concurrency: int | None = None,
        *,
        lease_time: timedelta = DEFAULT_LEASE,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        kinds: frozenset[str] = ALL_KINDS,
        share_port: bool = False,
    ) -> None:
        if concurrency is not None and concurrency < 1:
            raise HostConfigError(f"concurrency must be at least 1, got {concurrency}")
        self.app_dir = app_dir.resolve()
        self.requested_port, self.concurrency = port, concurrency
        self.lease_time, self.grace_seconds = lease_time, grace_seconds
        self.kinds, self.share_port = kinds, share_port
        self.invoker = Invoker()
        self.config = HostJson()
        self.server: FunctionHttpServer | None = None
        self.listeners: list[QueueListener] = []
        self.timers: list[TimerRunner] = []

    @property
    def port(self) -> int:
        """The port HTTP is served on (the one chosen by the system if 0 was asked)."""
        return self.server.server_address[1] if self.server else self.requested_port

    def start(self, before_serving: Callable[[Host], None] | None = None) -> None:
        """Load settings and the app, then serve; raise HostConfigError if it cannot be served.

        `before_serving` runs once the HTTP port is bound, before anything is served.
        """
        copied = load_local_settings(self.app_dir, os.environ)
        log.debug("App settings from local.settings.json: %s", ", ".join(copied) or "none")
        self.config = load_host_json(self.app_dir)
        found = served(discover(load_app(self.app_dir), os.environ, self.app_dir), self.kinds)
        functions = [f for f in found if not is_disabled(f.name, os.environ)]
        if len(functions) < len(found):
            off = sorted({f.name for f in found} - {f.name for f in functions})
            log.info("Disabled by AzureWebJobs.<name>.Disabled: %s", ", ".join(off))
        functions = _sign_in(functions)
        self._build(functions)
        if before_serving is not None:
            try:
                before_serving(self)
            except BaseException:
                if self.server is not None:
                    self.server.server_close()
                raise
        for listener in self.listeners:
            listener.start()
        for timer in self.timers:
            timer.start()
        if self.server is not None:
            threading.Thread(
                target=self.server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name="host-http",
                daemon=True,
            ).start()
        log.info("%s", banner(self, functions))

    def _build(self, functions: list[AnyFunction]) -> None:
        """Make every part, binding the HTTP port last: nothing runs yet."""
        queues = self.config.extensions.queues
        self.timers = [
            TimerRunner(f, self.invoker) for f in functions if isinstance(f, TimerFunction)
        ]
        try:
            self.listeners = [
                QueueListener(
                    f,
                    queues,
                    self.invoker,
                    concurrency=self.concurrency,
                    lease_time=self.lease_time,
                    function_timeout=self.config.function_timeout,
                )
                for f in functions
                if isinstance(f, QueueFunction)
            ]
        except StorageConfigError as exc:
            raise HostConfigError(str(exc)) from exc
        http = [f for f in functions if isinstance(f, HttpFunction)]
        router = Router(
            self.config.extensions.http.route_prefix, [(f.route, f.methods, f) for f in http]
        )
        try:
            self.server = FunctionHttpServer(
                self.requested_port, router, self.invoker, share_port=self.share_port
            )
        except OSError as exc:
            raise HostConfigError(
                f"cannot listen on 127.0.0.1:{self.requested_port}: {exc}"
            ) from exc

    def stop(self) -> bool:
        """Stop taking work, let running invocations finish within the grace period.

        Return False if some were still running when it ended; their queue messages are
        delivered again once their lease runs out.
        """
        log.info("Stopping: waiting up to %.0fs for running functions", self.grace_seconds)
        deadline = time.monotonic() + self.grace_seconds
        for listener in self.listeners:
            listener.stop()
        for timer in self.timers:
            timer.stop()
        if self.server is not None:
            self.server.stopping = True
            self.server.shutdown()
        finished = all(
            [listener.drain(_left(deadline)) for listener in self.listeners]
            + [timer.join(_left(deadline)) for timer in self.timers]
            + [self.server.wait_idle(_left(deadline)) if self.server else True]
        )
        if self.server is not None:
            self.server.server_close()
        self.invoker.close()
        if not finished:
            log.warning("Stopped with functions still running after %.0fs", self.grace_seconds)
        return finished

    def __enter__(self) -> Host:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _sign_in(functions: list[AnyFunction]) -> list[AnyFunction]:
    """Get a token for each identity-based connection now: a failure stops the start, named.

    The Functions host stops the same way when its identity cannot sign in. Functions
    on the same connection get one connection object, so they share its token.
    """
    shared: dict[StorageConnection, StorageConnection] = {}
    functions = [
        replace(f, connection=shared.setdefault(f.connection, f.connection))
        if isinstance(f, QueueFunction)
        else f
        for f in functions
    ]
    for connection in shared.values():
        if isinstance(connection, IdentityConnection):
            try:
                connection.check()
            except StorageConfigError as exc:
                raise HostConfigError(str(exc)) from exc
    return functions


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def serve(
    app_dir: Path,
    port: int = 7071,
    concurrency: int | None = None,
    stop_event: threading.Event | None = None,
    kinds: frozenset[str] = ALL_KINDS,
) -> int:
    """Serve the app in `app_dir` until SIGTERM/SIGINT or `stop_event`; return an exit code."""
    try:
        configure_logging(os.environ.get("LIGHTSOUT_LOG_FORMAT", "text"))
    except ValueError as exc:
        print(f"The host cannot start: {exc}", file=sys.stderr)
        return 1
    stop = stop_event or threading.Event()
    # Handle signals before starting: a function may be running as soon as start() begins.
    with _stop_on_signals(stop):
        try:
            extra = _extra_processes(process_count(os.environ), kinds)
            host = Host(app_dir, port, concurrency, kinds=kinds, share_port=shares_port(os.environ))
            host.start(before_serving=extra.start if extra else None)
        except HostConfigError as exc:
            log.error("The host cannot start: %s", exc, exc_info=exc.__cause__ is not None)
            return 1
        report_ready(os.environ)
        code = _watch(stop, extra)
        host.stop()
        if extra is not None:
            extra.stop(host.grace_seconds + 5)
    return code


def _extra_processes(count: int, kinds: frozenset[str]) -> ExtraProcesses | None:
    """The worker processes after this one (FUNCTIONS_WORKER_PROCESS_COUNT), if any."""
    kinds = kinds - {"timers"}  # timers run once, here
    return ExtraProcesses(count - 1, kinds) if count > 1 and kinds else None


def _watch(stop: threading.Event, extra: ExtraProcesses | None) -> int:
    """Wait for `stop`; 1 if a worker process exited on its own first, else 0."""
    while not stop.wait(0.5):
        if extra is not None and (gone := extra.exited()):
            pid, status = gone[0]
            log.error("Worker process %d exited with %d: stopping the host", pid, status)
            return 1
    return 0


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set `stop` on SIGTERM/SIGINT (only the main thread may handle signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("Second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        log.info("%s received", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
