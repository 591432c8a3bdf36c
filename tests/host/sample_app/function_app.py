"""A small v2-model app exercising what the local host serves: routes, queues, timers."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import azure.functions as func

# A test of the host's worker processes makes the app fail to load in one of them.
if os.environ.get("LIGHTSOUT_HOST_PROCESS_NUMBER", "1") == os.environ.get("SAMPLE_FAIL_IN_PROCESS"):
    raise RuntimeError("sample app told to fail in this worker process")

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
_record_lock = threading.Lock()


def record(name: str, **fields: Any) -> None:
    """Append what a function saw to $SAMPLE_RECORD_DIR/<name>.jsonl, for tests to read."""
    directory = os.environ.get("SAMPLE_RECORD_DIR")
    if directory:
        line = json.dumps(fields, default=str) + "\n"
        with _record_lock, (Path(directory) / f"{name}.jsonl").open("a") as out:
            out.write(line)


def _json(payload: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")


@app.route(route="items/{item_id}", methods=["GET"])
def get_item(req: func.HttpRequest) -> func.HttpResponse:
    return _json(
        {
            "item_id": req.route_params["item_id"],
            "params": dict(req.params),
            "url": req.url,
            "header": req.headers.get("x-sample"),
            "headers": sorted(req.headers.keys()),
        }
    )


@app.route(route="items/special", methods=["GET"])
def special_item(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"special": True})


@app.route(route="items", methods=["POST"])
def create_item(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"received": req.get_json()}, status=201)


@app.route(route="numbers/{n:int}/{label?}", methods=["GET"])
def numbers(req: func.HttpRequest) -> func.HttpResponse:
    return _json(dict(req.route_params))


@app.route(route="files/{*path}", methods=["GET"])
def files(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.route_params["path"], headers={"X-Kind": "file"})


@app.route(route="pid", methods=["GET"])
def pid(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"pid": os.getpid()})


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("boom on purpose")


@app.route(route="async/{word}", methods=["GET"])
async def shout(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(0.01)
    return func.HttpResponse(req.route_params["word"].upper())


@app.route(route="context", methods=["GET"])
def with_context(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return _json({"function": context.function_name, "invocation_id": context.invocation_id})


@app.route(route="slow", methods=["GET"])
def slow(req: func.HttpRequest) -> func.HttpResponse:
    time.sleep(float(req.params.get("seconds", "1")))
    return func.HttpResponse("slept")


@app.function_name("work")
@app.queue_trigger(
    arg_name="msg", queue_name="%SAMPLE_WORK_QUEUE%", connection="AzureWebJobsStorage"
)
def work(msg: func.QueueMessage) -> None:
    """Body: {"id": ..., "action": "ok" | "fail" | "sleep", "seconds": float}."""
    body = json.loads(msg.get_body())
    started = time.time()
    record(
        "work",
        event="start",
        id=body.get("id"),
        at=started,
        dequeue_count=msg.dequeue_count,
        message_id=msg.id,
        thread=threading.current_thread().name,
    )
    if body.get("action") == "sleep":
        time.sleep(float(body.get("seconds", 1)))
    if body.get("action") == "fail":
        raise ValueError(f"failing message {body.get('id')} on purpose")
    record(
        "work",
        event="end",
        id=body.get("id"),
        at=time.time(),
        started=started,
        dequeue_count=msg.dequeue_count,
    )


@app.queue_trigger(
    arg_name="msg", queue_name="%SAMPLE_INBOX_QUEUE%", connection="AzureWebJobsStorage"
)
def inbox(msg: func.QueueMessage) -> None:
    record("inbox", body=msg.get_body().decode())


@app.queue_trigger(
    arg_name="msg", queue_name="%SAMPLE_INBOX_QUEUE%-poison", connection="AzureWebJobsStorage"
)
def inbox_poison(msg: func.QueueMessage) -> None:
    """A poison queue's function; the local host says why when it could not decode one."""
    record(
        "inbox_poison",
        body=msg.get_body().decode(errors="replace"),
        kind=type(msg).__name__,
        reason=getattr(msg, "reason", None),
        dequeue_count=msg.dequeue_count,
    )


@app.queue_trigger(
    arg_name="message", queue_name="%SAMPLE_ASYNC_QUEUE%", connection="AzureWebJobsStorage"
)
async def async_work(message: func.QueueMessage) -> None:
    await asyncio.sleep(0.01)
    record(
        "async_work",
        body=message.get_body().decode(),
        dequeue_count=message.dequeue_count,
        insertion_time=message.insertion_time,
        pop_receipt=message.pop_receipt,
    )


@app.timer_trigger(arg_name="timer", schedule="*/1 * * * * *", run_on_startup=True)
def tick(timer: func.TimerRequest) -> None:
    record("tick", at=time.time(), past_due=timer.past_due, pid=os.getpid())


@app.timer_trigger(arg_name="timer", schedule="* * * * * *")
def tick_fail(timer: func.TimerRequest) -> None:
    record("tick_fail", at=time.time())
    raise RuntimeError("a failing timer run")
