"""An agent instrumented the way the OpenTelemetry GenAI conventions describe, using only the
official SDK and OTLP/HTTP exporter. costmeter's tests run it against a live daemon.

Usage: genai_agent.py MODE
  spans+histogram  three chat calls as spans and as gen_ai.client.token.usage points
  histogram-twice  the same calls as histogram points only, exported twice (cumulative)
  opencode+litellm one span shaped as opencode's (the Vercel AI SDK: input including the cache,
                   the split under ai.usage.inputTokenDetails) and one as LiteLLM's otel
                   callback's (its own cost in gen_ai.cost.total_cost)
  codex-logs       Codex's codex.sse_event log events of one response (created, a delta, and
                   response.completed with its usage), through the SDK's logging handler

The endpoint comes from OTEL_EXPORTER_OTLP_ENDPOINT, as for any stock exporter.
"""

import sys

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

# (input tokens incl. cache reads, of which cache reads, output tokens)
CALLS = [(1000, 0, 100), (2000, 500, 200), (3000, 0, 300)]
MODEL = "gpt-4o"


def other_shapes(tracer) -> None:
    with tracer.start_as_current_span("ai.streamText.doStream") as span:
        span.set_attribute("gen_ai.system", "anthropic")
        span.set_attribute("gen_ai.request.model", "claude-sonnet-4-5")
        span.set_attribute("gen_ai.usage.input_tokens", 10_000)
        span.set_attribute("gen_ai.usage.output_tokens", 200)
        span.set_attribute("ai.usage.inputTokenDetails.cacheReadTokens", 9_000)
        span.set_attribute("ai.usage.inputTokenDetails.cacheWriteTokens", 800)
    with tracer.start_as_current_span("litellm_request") as span:
        span.set_attribute("gen_ai.system", "openai")
        span.set_attribute("gen_ai.request.model", MODEL)
        span.set_attribute("gen_ai.usage.prompt_tokens", 1_000)
        span.set_attribute("gen_ai.usage.completion_tokens", 100)
        span.set_attribute("gen_ai.cost.total_cost", 0.0123)


def codex_logs(resource) -> None:
    import logging

    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    log = logging.getLogger("codex_otel")
    log.addHandler(LoggingHandler(logger_provider=provider))
    log.setLevel(logging.INFO)
    usage = {"input_token_count": 12_000, "cached_token_count": 10_000, "output_token_count": 900,
             "reasoning_token_count": 600, "model": "gpt-5"}
    for kind in ["response.created", "response.output_text.delta", "response.completed"]:
        log.info("codex.sse_event", extra={"event.name": "codex.sse_event", "event.kind": kind, **usage})
    if not provider.force_flush(10_000):
        sys.exit("log export did not finish")
    provider.shutdown()
    print("exported", flush=True)


def main(mode: str) -> None:
    resource = Resource.create({"service.name": f"py-agent-{mode}"})
    if mode == "codex-logs":
        codex_logs(resource)
        return
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=3_600_000)
    meters = MeterProvider(resource=resource, metric_readers=[reader])
    histogram = meters.get_meter("genai-test").create_histogram(
        "gen_ai.client.token.usage", unit="{token}", description="tokens per call"
    )
    tracers = TracerProvider(resource=resource)
    tracers.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracer = tracers.get_tracer("genai-test")

    if mode == "opencode+litellm":
        other_shapes(tracer)
    for input_tokens, cache_read, output_tokens in ([] if mode == "opencode+litellm" else CALLS):
        common = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": MODEL,
            "gen_ai.response.model": MODEL,
        }
        if mode == "spans+histogram":
            with tracer.start_as_current_span(f"chat {MODEL}") as span:
                for key, value in common.items():
                    span.set_attribute(key, value)
                span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
                if cache_read:
                    span.set_attribute("gen_ai.usage.cache_read.input_tokens", cache_read)
        histogram.record(input_tokens, {**common, "gen_ai.token.type": "input"})
        histogram.record(output_tokens, {**common, "gen_ai.token.type": "output"})

    # Spans first: whichever signal reaches costmeter first meters this agent.
    if not tracers.force_flush(10_000):
        sys.exit("span export did not finish")
    if not meters.force_flush(10_000):
        sys.exit("metric export did not finish")
    if mode == "histogram-twice":
        # A cumulative exporter sends the whole running sum again.
        if not meters.force_flush(10_000):
            sys.exit("second metric export did not finish")
    tracers.shutdown()
    meters.shutdown()
    print("exported", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
