//! Where the binary's logs and traces go: log lines to stderr (text or JSON,
//! filtered by `RUST_LOG`), and, with `--otlp-endpoint` (the `otlp` feature), a
//! span per request, fetch, compile and guest call to an OpenTelemetry collector
//! over OTLP/HTTP.

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::commands::LogFormat;

/// What must outlive the command: the trace exporter, flushed when dropped.
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(traces) = self.traces.take()
            && let Err(e) = traces.shutdown()
        {
            eprintln!("warning: not every trace span was sent: {e}");
        }
    }
}

/// Installs the log (and trace) subscriber. Must run outside the async runtime:
/// the exporter sends from a thread of its own with a blocking client.
pub fn init(
    format: LogFormat,
    default_filter: &str,
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, String> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        // One JSON object a line, the event's fields at the top level.
        LogFormat::Json => logs.json().flatten_event(true).with_filter(filter).boxed(),
        LogFormat::Text => logs.with_filter(filter).boxed(),
    };
    let registry = tracing_subscriber::registry().with(logs);
    match otlp_endpoint {
        None => {
            registry.init();
            Ok(Telemetry {
                #[cfg(feature = "otlp")]
                traces: None,
            })
        }
        #[cfg(feature = "otlp")]
        Some(endpoint) => {
            let (traces, layer) = otlp::layer(endpoint)?;
            registry.with(layer).init();
            Ok(Telemetry {
                traces: Some(traces),
            })
        }
        #[cfg(not(feature = "otlp"))]
        Some(_) => Err(
            "this burncache was built without the `otlp` feature, so it cannot \
                        send traces; build it with `--features otlp`"
                .to_string(),
        ),
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig as _};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{LevelFilter, Targets};

    /// The exporter to `endpoint` (a collector's base URL; `/v1/traces` is added)
    /// and the layer that feeds it burncache's spans. The rest of the exporter's
    /// settings come from the standard `OTEL_EXPORTER_OTLP_*` variables (protocol,
    /// headers, timeout), the service's name from `OTEL_SERVICE_NAME`.
    pub(super) fn layer<S>(
        endpoint: &str,
    ) -> Result<(SdkTracerProvider, impl Layer<S> + Send + Sync + 'static), String>
    where
        S: tracing::Subscriber
            + for<'span> tracing_subscriber::registry::LookupSpan<'span>
            + Send
            + Sync,
    {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        // The specification's default, http/protobuf, unless the standard variables
        // ask for JSON.
        let asked = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"));
        let protocol = match asked.as_deref() {
            Err(_) | Ok("http/protobuf") => Protocol::HttpBinary,
            Ok("http/json") => Protocol::HttpJson,
            Ok(other) => {
                return Err(format!(
                    "OTLP protocol {other:?}: burncache sends http/protobuf or http/json"
                ));
            }
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(&url)
            .build()
            .map_err(|e| format!("cannot send traces to {url}: {e}"))?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("burncache");
        }
        // Every request is recorded: a client's `traceparent` places the spans in
        // its trace, but its sampling flag does not switch the node's spans off.
        let provider = SdkTracerProvider::builder()
            .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        // burncache's own spans, whatever RUST_LOG lets through to the log.
        let spans = Targets::new()
            .with_target("burncache", LevelFilter::INFO)
            .with_default(LevelFilter::OFF);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("burncache"))
            .with_filter(spans);
        Ok((provider, layer))
    }
}
