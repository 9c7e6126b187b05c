//! Prometheus metrics for `burncache serve`: the server's own (requests, latency,
//! in-flight, rejections) and the cache's counters, read at scrape time.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::{BurnCache, ErrorKind};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Outcome {
    /// `ok`, or an error kind (`timeout`, `trap`, ...).
    pub(crate) outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Reason {
    pub(crate) reason: String,
}

/// The server's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<Outcome, Counter>,
    pub(crate) latency: Histogram,
    pub(crate) in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub(crate) rejected: Family<Reason, Counter>,
}

impl Metrics {
    pub(crate) fn new(cache: BurnCache) -> Metrics {
        let mut registry = Registry::with_prefix("burncache");
        let requests = Family::<Outcome, Counter>::default();
        registry.register(
            "requests",
            "Requests that ran guest code (calls, batches, HTTP guests), by outcome",
            requests.clone(),
        );
        let latency = Histogram::new([
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0, 10.0,
        ]);
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response head, for requests that ran guest code",
            latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight",
            "Requests running guest code now",
            in_flight.clone(),
        );
        let rejected = Family::<Reason, Counter>::default();
        registry.register(
            "rejected",
            "Requests refused before running anything (overload, size, auth)",
            rejected.clone(),
        );
        registry.register_collector(Box::new(CacheCollector(cache)));
        Metrics {
            registry,
            requests,
            latency,
            in_flight,
            rejected,
        }
    }

    pub(crate) fn count(&self, outcome: &str) {
        self.requests
            .get_or_create(&Outcome {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub(crate) fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&Reason {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The metrics in the text format a scraper asked for.
    pub(crate) fn render(&self, format: Exposition) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        match format {
            Exposition::OpenMetrics => text,
            Exposition::Prometheus => prometheus_text(&text),
        }
    }
}

/// The text formats `/metrics` is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exposition {
    /// OpenMetrics 1.0, for scrapers that ask for it (Prometheus does, first).
    OpenMetrics,
    /// Prometheus' text format 0.0.4, for everyone else.
    Prometheus,
}

impl Exposition {
    /// The format an `Accept` header asks for.
    pub(crate) fn for_accept(accept: Option<&str>) -> Exposition {
        let open = accept.is_some_and(|accept| {
            accept.split(',').any(|kind| {
                let mut parts = kind.split(';').map(str::trim);
                let essence = parts.next().unwrap_or_default();
                let refused = parts.any(|p| p.replace(' ', "") == "q=0");
                essence.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if open {
            Exposition::OpenMetrics
        } else {
            Exposition::Prometheus
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// OpenMetrics text as Prometheus' text format 0.0.4: a counter's `TYPE` and `HELP`
/// lines name its `_total` samples, as 0.0.4 wants; `UNIT` lines and the `# EOF`
/// marker, which it does not have, go. Gauges and histograms read the same in both.
fn prometheus_text(open: &str) -> String {
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(open.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# TYPE ", "# HELP "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => text.push_str(&line),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

/// Reads the cache's own counters when scraped.
#[derive(Debug)]
struct CacheCollector(BurnCache);

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        let counters: [(&str, &str, u64); 22] = [
            (
                "cache_hits",
                "Look-ups that found a finished compile",
                stats.hits,
            ),
            (
                "cache_misses",
                "Look-ups that compiled or waited for a compile",
                stats.misses,
            ),
            ("compiles", "Compiles started", stats.compiles),
            (
                "compile_failures",
                "Compiles that failed",
                stats.compile_failures,
            ),
            (
                "artifact_loads",
                "Components loaded from compiled artifacts",
                stats.artifact_loads,
            ),
            (
                "artifact_rejections",
                "Compiled artifacts refused (MAC, owner or type) and deleted",
                stats.artifact_rejections,
            ),
            (
                "artifact_evictions",
                "Compiled artifacts deleted to keep the directory within its bound",
                stats.artifact_evictions,
            ),
            (
                "artifact_fetches",
                "Components loaded from the cluster's shared artifacts",
                stats.artifact_fetches,
            ),
            (
                "shared_rejections",
                "Shared artifacts refused (the seal did not verify)",
                stats.shared_rejections,
            ),
            (
                "artifact_shares",
                "Compiled artifacts shared with the cluster through the store",
                stats.artifact_shares,
            ),
            (
                "evictions",
                "Components dropped from memory to keep within the held bounds",
                stats.evictions,
            ),
            (
                "outbound_sent",
                "Outgoing HTTP requests from guests that were sent",
                stats.outbound_sent,
            ),
            (
                "outbound_denied",
                "Outgoing HTTP requests from guests the allow-list refused",
                stats.outbound_denied,
            ),
            (
                "outbound_failed",
                "Allowed outgoing HTTP requests that failed",
                stats.outbound_failed,
            ),
            (
                "negative_hits",
                "Look-ups answered from the memory of digests the store did not have",
                stats.negative_hits,
            ),
            (
                "script_checks",
                "Scripts checked on the JavaScript runtime",
                stats.script_checks,
            ),
            (
                "js_runtime_compiles",
                "Compiles of the JavaScript runtime",
                stats.runtime_compiles,
            ),
            (
                "js_runtime_loads",
                "Loads of the compiled JavaScript runtime from its artifact",
                stats.runtime_loads,
            ),
            (
                "js_runtime_fetches",
                "Loads of the JavaScript runtime from the cluster's shared artifact",
                stats.runtime_fetches,
            ),
            (
                "fetches",
                "Components fetched from the store",
                stats.fetches,
            ),
            (
                "fuel_burned",
                "Fuel burned by top-level calls",
                stats.fuel_burned,
            ),
            (
                "calls_ok",
                "Calls that returned an output (nested calls included)",
                stats.calls_ok,
            ),
        ];
        for (name, help, value) in counters {
            let counter: ConstCounter<u64> = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let seconds: ConstCounter<f64> = ConstCounter::new(stats.compile_time.as_secs_f64());
        let metric = encoder.encode_descriptor(
            "compile_seconds",
            "Time spent compiling",
            None,
            seconds.metric_type(),
        )?;
        seconds.encode(metric)?;
        let mut failed = encoder.encode_descriptor(
            "calls_failed",
            "Calls that failed, by error kind (nested calls included)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for kind in ErrorKind::ALL {
            let count: ConstCounter<u64> = ConstCounter::new(stats.failed(kind));
            let labels = [("kind", kind.as_str())];
            count.encode(failed.encode_family(&labels)?)?;
        }
        let held: prometheus_client::metrics::gauge::ConstGauge<i64> =
            prometheus_client::metrics::gauge::ConstGauge::new(stats.components as i64);
        let metric = encoder.encode_descriptor(
            "components",
            "Components this node holds",
            None,
            held.metric_type(),
        )?;
        held.encode(metric)?;
        Ok(())
    }
}
