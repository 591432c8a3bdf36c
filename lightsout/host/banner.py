"""The start-up banner: each function and its trigger, as `func start` lists them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightsout.host.discovery import AnyFunction, HttpFunction, QueueFunction, TimerFunction

if TYPE_CHECKING:
    from lightsout.host.runtime import Host


def banner(host: Host, functions: list[AnyFunction]) -> str:
    queues = host.config.extensions.queues
    lines = [
        f"Lightsout local host serving {host.app_dir} on http://127.0.0.1:{host.port}",
        "Functions:" if functions else "No functions found in function_app.app",
    ]
    prefix = host.config.extensions.http.route_prefix.strip("/")
    base = f"http://127.0.0.1:{host.port}" + (f"/{prefix}" if prefix else "")
    for f in sorted(functions, key=lambda f: f.name):
        lines.append(f"    {f.name}: {_describe(f, base)}")
    if any(isinstance(f, QueueFunction) for f in functions):
        lines.append(
            f"Queues: batchSize {queues.batch_size}, newBatchThreshold {queues.batch_threshold}, "
            f"maxDequeueCount {queues.max_dequeue_count}, visibilityTimeout "
            f"{queues.visibility_timeout}, maxPollingInterval {queues.max_polling_interval}, "
            f"messageEncoding {queues.message_encoding}"
        )
    return "\n".join(lines)


def _describe(f: AnyFunction, base: str) -> str:
    if isinstance(f, HttpFunction):
        methods = ",".join(sorted(f.methods)) if f.methods else "ALL"
        return f"[{methods}] {base}/{f.route.lstrip('/')}"
    if isinstance(f, QueueFunction):
        return f"queueTrigger '{f.queue_name}'"
    assert isinstance(f, TimerFunction)
    startup = ", run on startup" if f.run_on_startup else ""
    return f"timerTrigger '{f.schedule}'{startup}"
