"""`traced`: a span per call, with the ids the call was given as attributes."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from controllers import tracing


@tracing.traced("probe")
def probe(job_id: str, stage: int = 1, *, task_id: str | None = None, note: str = "") -> object:
    span = trace.get_current_span()
    assert isinstance(span, ReadableSpan)
    return dict(span.attributes or {})


def test_ids_passed_by_position_or_keyword_are_attributes_and_defaults_are_not() -> None:
    tracing.configure()
    assert probe("j1") == {"lightsout.job_id": "j1"}
    assert probe("j1", 2, task_id="t1", note="x") == {
        "lightsout.job_id": "j1",
        "lightsout.stage": 2,
        "lightsout.task_id": "t1",
    }
    assert probe(stage=3, job_id="j2") == {"lightsout.job_id": "j2", "lightsout.stage": 3}
