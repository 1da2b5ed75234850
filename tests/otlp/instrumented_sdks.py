"""The official OpenAI and Anthropic SDKs, instrumented by the GenAI instrumentations people
install from PyPI (the OpenTelemetry project's openai-v2, OpenLLMetry's anthropic), calling a
stand-in provider; the SDK's OTLP/HTTP exporters send the telemetry to costmeter.

Usage: instrumented_sdks.py PROVIDER_URL

Metrics are flushed before spans, as a short script's providers often shut down: costmeter
must still count each call once, from the spans (they carry the cache split). The endpoint
comes from OTEL_EXPORTER_OTLP_ENDPOINT, as for any stock exporter.
"""

import os
import sys

# openai-v2 reports the cache split only under the latest GenAI conventions.
os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

PROMPT = "Say hello, stand-in, in a few words please."


def main(url: str) -> None:
    resource = Resource.create({"service.name": "instrumented-sdks"})
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=3_600_000)
    meters = MeterProvider(resource=resource, metric_readers=[reader])
    metrics.set_meter_provider(meters)
    tracers = TracerProvider(resource=resource)
    tracers.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(), schedule_delay_millis=3_600_000))
    trace.set_tracer_provider(tracers)

    from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    OpenAIInstrumentor().instrument()
    AnthropicInstrumentor().instrument()

    import anthropic
    import openai

    oa = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test", max_retries=0)
    for n in range(2):
        oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": PROMPT * (n + 1)}])
    an = anthropic.Anthropic(base_url=url, api_key="sk-ant-test", max_retries=0)
    for n in range(2):
        an.messages.create(model="claude-sonnet-4-5", max_tokens=256,
                           messages=[{"role": "user", "content": PROMPT * (n + 1)}])

    if not meters.force_flush(10_000):
        sys.exit("metric export did not finish")
    if not tracers.force_flush(10_000):
        sys.exit("span export did not finish")
    meters.shutdown()
    tracers.shutdown()
    print("exported", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
