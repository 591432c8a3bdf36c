"""Where spans go: Azure Monitor, OTLP, both, or nowhere, by the environment alone.

Each case runs in a fresh interpreter: a process sets its tracer provider once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.hosts import REPO_ROOT

PROBE = """
import json
from opentelemetry import trace
from controllers import tracing
tracing.configure()
provider = trace.get_tracer_provider()
processors = provider._active_span_processor._span_processors
print(json.dumps(sorted(type(getattr(p, "span_exporter", None)).__name__ for p in processors)))
"""
APPINSIGHTS = (
    "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/"
)
OTLP = "http://127.0.0.1:9"


def exporters(extra: dict[str, str]) -> list[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPLICATIONINSIGHTS_"))
    }
    env |= {"PYTHONPATH": str(REPO_ROOT), "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found: list[str] = json.loads(done.stdout.splitlines()[-1])
    return [name for name in found if name != "NoneType"]  # Azure Monitor's own processors


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": OTLP}, ["OTLPSpanExporter"]),
        ({"APPLICATIONINSIGHTS_CONNECTION_STRING": APPINSIGHTS}, ["AzureMonitorTraceExporter"]),
        (
            {
                "APPLICATIONINSIGHTS_CONNECTION_STRING": APPINSIGHTS,
                "OTEL_EXPORTER_OTLP_ENDPOINT": OTLP,
            },
            ["AzureMonitorTraceExporter", "OTLPSpanExporter"],
        ),
    ],
)
def test_spans_are_exported_where_the_environment_says(
    extra: dict[str, str], expected: list[str]
) -> None:
    assert exporters(extra) == expected
