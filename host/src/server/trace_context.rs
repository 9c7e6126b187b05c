//! The caller's trace: a request's W3C `traceparent` (and `tracestate`) make its
//! span a child of the caller's, when the server exports traces (the `otlp`
//! feature, and `burncache --otlp-endpoint`).

/// Makes `span` a child of the trace `headers` carry, if they carry one.
#[cfg(feature = "otlp")]
pub(crate) fn join_caller(span: &tracing::Span, headers: &http::HeaderMap) {
    use opentelemetry::propagation::Extractor;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    struct Headers<'a>(&'a http::HeaderMap);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }

    let caller = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&Headers(headers))
    });
    if let Err(e) = span.set_parent(caller) {
        tracing::debug!("cannot join the caller's trace: {e}");
    }
}

/// Without the `otlp` feature there are no traces to join.
#[cfg(not(feature = "otlp"))]
pub(crate) fn join_caller(_: &tracing::Span, _: &http::HeaderMap) {}
