"""OpenTelemetry traces: off unless configured, and then a span per workflow, node and attempt.

`tracer_provider(settings)` builds the SDK provider with the OTLP/HTTP exporter when
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, and returns None
otherwise. With None, nothing of OpenTelemetry runs: the lifecycle, the DAG engine and
the agent client get no tracer and skip every tracing branch (one `is None` test;
bench/tracing.py measures it). The process-global provider is never touched, so
tests and several apps in one process stay apart.

Spans: `workflow` (lifecycle; attributes workflow.id, workflow.definition,
workflow.status), `node <id>` (DAG engine; node, kind, agent, node.status, node.attempts),
`agent <name>` per attempt (agent client; agent, attempt, breaker.state,
retry.delay_s before it, outcome, http.response.status_code, error.type). Each attempt sends the
W3C `traceparent` of its span, so an agent's own spans join the workflow's trace.
An incoming `traceparent` on `POST /api/query` becomes the workflow span's parent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from orchestrator.settings import Settings

_PROPAGATOR = TraceContextTextMapPropagator()
INSTRUMENTATION = "agent-orchestrator"


def configured_tracer_provider(settings: Settings) -> TracerProvider | None:
    """The SDK provider exporting over OTLP/HTTP, or None when tracing is not configured."""
    if not settings.otel_endpoint:
        return None
    # Imported here: the exporter (protobuf, requests) costs start-up time nobody needs
    # when tracing is off.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    resource = Resource.create({"service.name": settings.otel_service_name})
    provider = TracerProvider(resource=resource)
    # The exporter reads the other OTEL_EXPORTER_OTLP_* variables (headers, timeout) itself.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_endpoint)))
    return provider


def tracer_of(provider: TracerProvider | None) -> Tracer | None:
    return None if provider is None else provider.get_tracer(INSTRUMENTATION)


def incoming_context(
    headers: Mapping[str, str], *, enabled: bool
) -> contextlib.AbstractContextManager[None]:
    """Make an incoming W3C `traceparent` the current context while the block runs.

    Tasks created inside (a submitted workflow) copy it, so their spans join the
    caller's trace. Does nothing when tracing is off or no header came (then a shared
    null context: no generator made and run per request).
    """
    if not enabled or "traceparent" not in headers:
        return _NO_CONTEXT
    return _attached(headers)


_NO_CONTEXT: contextlib.nullcontext[None] = contextlib.nullcontext()


@contextlib.contextmanager
def _attached(headers: Mapping[str, str]) -> Iterator[None]:
    token = otel_context.attach(_PROPAGATOR.extract(carrier=dict(headers)))
    try:
        yield
    finally:
        otel_context.detach(token)
