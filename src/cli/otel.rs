//! `--otlp URL`: the process's spans exported over OTLP/HTTP (JSON) to an
//! OpenTelemetry collector (Jaeger, Tempo, Honeycomb … all take it), through
//! `tracing-opentelemetry` and the OpenTelemetry SDK's batch exporter.
//!
//! One trace per task, across processes: every task has a W3C trace id from
//! its creation (carried in every envelope about it), and the spans courier
//! opens about a task — `submit` where it is created, `task` for each run
//! of an attempt on an executor, with the run's `step`s and waits inside —
//! are put in that trace by the [`adopt`] function installed here as
//! `courier_bus::trace`'s adopter. HTTP request spans keep a trace of their
//! own unless the request carried a `traceparent`: then they continue it,
//! read by OpenTelemetry's W3C propagator (installed here as the global
//! one, which tracing-actix-web asks), and a task the request creates is in
//! that trace too.

use std::sync::OnceLock;

use courier_bus::TraceParent;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The traces endpoint of an OTLP/HTTP base URL (`http://collector:4318`
/// → `…/v1/traces`); a URL that already names it is kept.
pub fn traces_endpoint(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/v1/traces") {
        url.to_string()
    } else {
        format!("{url}/v1/traces")
    }
}

/// The layer that exports spans to `url`; installs the trace adopter.
/// `command` (`serve`, `executor`, `web`) names the process in the
/// resource, beside its pid.
pub fn layer<S>(url: &str, command: &str) -> Result<impl Layer<S>, String>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(traces_endpoint(url))
        .build()
        .map_err(|e| format!("--otlp {url}: {e}"))?;
    let resource = Resource::builder()
        .with_service_name("courier")
        .with_attributes([
            KeyValue::new("process.pid", i64::from(std::process::id())),
            KeyValue::new("courier.command", command.to_string()),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("courier");
    let _ = PROVIDER.set(provider);
    courier_bus::trace::set_adopter(adopt);
    // An HTTP request's span continues the caller's trace: tracing-actix-web
    // extracts its `traceparent` and `tracestate` through this propagator.
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    Ok(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Makes `span` a child of the remote span `parent` names, in its trace.
fn adopt(span: &tracing::Span, parent: TraceParent) {
    let cx = SpanContext::new(
        TraceId::from(parent.trace_id),
        SpanId::from(parent.parent_id),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(Context::new().with_remote_span_context(cx));
}

/// Exports what is still buffered (at exit).
pub fn shutdown() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.shutdown();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_traces_endpoint_of_a_base_url() {
        assert_eq!(
            super::traces_endpoint("http://c:4318"),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            super::traces_endpoint("http://c:4318/v1/traces/"),
            "http://c:4318/v1/traces"
        );
    }
}
