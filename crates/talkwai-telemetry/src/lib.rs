//! Telemetry for every TalkwAI binary: `tracing` with an fmt layer and an env filter
//! (`RUST_LOG`), and OpenTelemetry export over OTLP/HTTP (protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set. The W3C TraceContext propagator is installed
//! globally; [`extract`], [`inject`] and [`span_with_parent`] carry `traceparent` and
//! `tracestate` in NATS headers, so one trace follows a command from its caller through the
//! append into the projector and the notifier. [`ops`] serves Prometheus `/metrics`, `/livez`
//! and `/readyz` for every service.
//!
//! # Architecture invariant
//! No TalkwAI crate but this one names OpenTelemetry's exporter or SDK types; services use
//! `tracing` spans and the helpers here.

pub mod ops;

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use opentelemetry::Context;

/// The env filter used when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,async_nats=warn";

/// Keeps the tracer provider alive; dropping it flushes and shuts down the exporter.
#[derive(Debug, Default)]
#[must_use = "dropping the guard shuts down span export"]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Guard {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(err) = provider.force_flush() {
                eprintln!("telemetry: cannot flush spans: {err}");
            }
            let _ = provider.shutdown();
        }
    }
}

fn resource(service_name: &str) -> opentelemetry_sdk::Resource {
    let builder = opentelemetry_sdk::Resource::builder();
    // OTEL_SERVICE_NAME, when set, wins over the binary's name.
    if std::env::var_os("OTEL_SERVICE_NAME").is_some_and(|v| !v.is_empty()) {
        builder.build()
    } else {
        builder.with_service_name(service_name.to_owned()).build()
    }
}

fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// Sets up tracing for a binary: fmt output filtered by `RUST_LOG` (default
/// [`DEFAULT_FILTER`]), the W3C propagator, and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set,
/// export of the spans the same filter lets through, over OTLP/HTTP with a batch processor.
/// Keep the guard until exit.
pub fn init(service_name: &str) -> Guard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let mut provider = None;
    let otel_layer = match endpoint {
        Some(endpoint) => match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => {
                let built = SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource(service_name))
                    .build();
                opentelemetry::global::set_tracer_provider(built.clone());
                let tracer = built.tracer(service_name.to_owned());
                provider = Some(built);
                eprintln!("telemetry: exporting spans over OTLP to {endpoint}");
                // The same filter as the logs: RUST_LOG decides which spans are exported too.
                Some(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(env_filter()),
                )
            }
            Err(err) => {
                eprintln!("telemetry: cannot build the OTLP exporter for {endpoint}: {err}");
                None
            }
        },
        None => None,
    };
    let fmt = tracing_subscriber::fmt::layer().with_filter(env_filter());
    let _ = tracing_subscriber::registry()
        .with(otel_layer)
        .with(fmt)
        .try_init();
    Guard { provider }
}

/// What [`init_for_tests`] installed: every finished span lands in the exporter.
#[cfg(feature = "testing")]
#[derive(Debug, Clone)]
pub struct TestTelemetry {
    /// The spans exported so far.
    pub exporter: opentelemetry_sdk::trace::InMemorySpanExporter,
    /// The provider (flush it before reading spans).
    pub provider: SdkTracerProvider,
}

#[cfg(feature = "testing")]
impl TestTelemetry {
    /// The finished spans so far.
    pub fn spans(&self) -> Vec<opentelemetry_sdk::trace::SpanData> {
        let _ = self.provider.force_flush();
        self.exporter.get_finished_spans().unwrap_or_default()
    }
}

/// Installs (once per process) a global subscriber with an OpenTelemetry layer exporting to
/// an in-memory exporter through a simple (synchronous) processor, and the W3C propagator.
#[cfg(feature = "testing")]
pub fn init_for_tests() -> TestTelemetry {
    static INSTALLED: std::sync::OnceLock<TestTelemetry> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            let exporter = opentelemetry_sdk::trace::InMemorySpanExporterBuilder::new().build();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .with_resource(resource("talkwai-test"))
                .build();
            opentelemetry::global::set_tracer_provider(provider.clone());
            let tracer = provider.tracer("talkwai-test");
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
            let _ = tracing_subscriber::registry()
                .with(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(EnvFilter::new(DEFAULT_FILTER)),
                )
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_test_writer()
                        .with_filter(filter),
                )
                .try_init();
            TestTelemetry { exporter, provider }
        })
        .clone()
}

/// Reads trace context from NATS headers.
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Writes trace context into NATS headers.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// The remote context carried by `headers` (`traceparent`, `tracestate`); an empty context
/// when there is none or it is malformed.
pub fn extract(headers: &HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Writes `cx` into `headers` as `traceparent` (and `tracestate`); nothing for a context
/// without a valid span.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(cx, &mut HeaderInjector(headers));
    });
}

/// Writes the trace context of `span` into `headers`.
pub fn inject_span(span: &tracing::Span, headers: &mut HeaderMap) {
    inject(&span.context(), headers);
}

/// Parents `span` on the trace context in `headers`, if they carry one; returns the span.
/// Call it before the span is first entered.
pub fn span_with_parent(span: tracing::Span, headers: Option<&HeaderMap>) -> tracing::Span {
    if let Some(headers) = headers {
        let cx = extract(headers);
        if opentelemetry::trace::TraceContextExt::has_active_span(&cx) {
            let _ = span.set_parent(cx);
        }
    }
    span
}

/// Adds a span link from `span` to the trace context in `headers`, if they carry one (for
/// spans that serve many traces at once, like a batch). Call it before the span is entered.
pub fn link_from(span: &tracing::Span, headers: &HeaderMap) {
    let cx = extract(headers);
    let remote = opentelemetry::trace::TraceContextExt::span(&cx)
        .span_context()
        .clone();
    if remote.is_valid() {
        span.add_link(remote);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_then_inject_round_trips_traceparent() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", parent);
        let cx = extract(&headers);
        let mut out = HeaderMap::new();
        inject(&cx, &mut out);
        assert_eq!(
            out.get("traceparent").map(|v| v.as_str().to_owned()),
            Some(parent.to_owned())
        );
    }

    #[test]
    fn nothing_to_extract_injects_nothing() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let cx = extract(&HeaderMap::new());
        let mut out = HeaderMap::new();
        inject(&cx, &mut out);
        assert!(out.get("traceparent").is_none());
    }
}
