"""Call user functions, sync or async, the way the Python worker does."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from typing import Any

from lightsout.host.context import InvocationContext
from lightsout.host.discovery import FunctionSpec
from lightsout.host.logformat import invocation

log = logging.getLogger(__name__)


class Invoker:
    """Run sync functions in the calling thread and coroutines on one shared event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def call(self, spec: FunctionSpec, trigger_value: Any) -> Any:
        """Invoke `spec` with its trigger argument; log the outcome and re-raise a failure."""
        context = InvocationContext(spec.name, spec.directory)
        kwargs: dict[str, Any] = {spec.arg_name: trigger_value}
        if spec.wants_context:
            kwargs["context"] = context
        with invocation(context.invocation_id):
            return self._call(spec, kwargs, context.invocation_id)

    def _call(self, spec: FunctionSpec, kwargs: dict[str, Any], invocation_id: str) -> Any:
        started = time.perf_counter()
        try:
            result = spec.func(**kwargs)
            if inspect.iscoroutine(result):
                result = asyncio.run_coroutine_threadsafe(result, self._event_loop()).result()
        except Exception:
            log.exception(
                "Executed '%s' (Failed, Id=%s, Duration=%.0fms)",
                spec.name,
                invocation_id,
                (time.perf_counter() - started) * 1000,
            )
            raise
        log.debug(
            "Executed '%s' (Succeeded, Id=%s, Duration=%.0fms)",
            spec.name,
            invocation_id,
            (time.perf_counter() - started) * 1000,
        )
        return result

    def close(self) -> None:
        """Stop the event loop, if one was started."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not loop.is_running():
                loop.close()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=loop.run_forever, name="host-asyncio", daemon=True
                )
                self._thread.start()
                self._loop = loop
            return self._loop
