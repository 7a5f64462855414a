//! What `GET /metrics` reports, in Prometheus's text format: requests and errors by route and status,
//! request latency, the batches the inference thread ran and how many requests wait for it.
//!
//! The metrics are `prometheus-client`'s (the Prometheus project's own Rust client): its counters, gauge
//! and histograms, kept in its registry and written by its Prometheus text encoder (format 0.0.4, served
//! as `text/plain; version=0.0.4`, `prometheus_text::CONTENT_TYPE`). That encoder, rather than the client's
//! OpenMetrics one, writes what every Prometheus scrapes and what this endpoint has always answered:
//! counters named `…_total` in their `# TYPE` lines too, `le="2"` (not `"2.0"`) in histogram buckets,
//! no `# EOF` line. Counters are registered without their `_total`, which the encoder appends.

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upper bounds of the batch-size buckets, in images.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The labels of a request count: `{route="…",code="…"}`, in that order.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCode {
    route: String,
    code: u16,
}

/// `{route="…"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

type LatencyFamily = Family<Route, Histogram, fn() -> Histogram>;

/// The server's counters, shared by the request handlers and the inference thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteCode, Counter>,
    errors: Family<Route, Counter>,
    latency: LatencyFamily,
    batch_images: Histogram,
    batch_seconds: Histogram,
    images: Counter,
    /// Requests handed to the inference thread and not yet taken by it.
    queued: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let latency: LatencyFamily = Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        let metrics = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            errors: Family::default(),
            latency,
            batch_images: Histogram::new(BATCH_BUCKETS),
            batch_seconds: Histogram::new(LATENCY_BUCKETS),
            images: Counter::default(),
            queued: Gauge::default(),
        };
        metrics.registered()
    }
}

impl Metrics {
    /// Registers every metric under its exposed name, in the order they are written. The registry
    /// appends the full stop to each help text.
    fn registered(mut self) -> Metrics {
        let registry = &mut self.registry;
        registry.register(
            "mnist_tch_requests",
            "HTTP requests answered, by route and status code",
            self.requests.clone(),
        );
        registry.register(
            "mnist_tch_errors",
            "Requests answered with a 4xx or 5xx status, by route",
            self.errors.clone(),
        );
        registry.register_with_unit(
            "mnist_tch_request_duration",
            "Time from request to answer, by route",
            Unit::Seconds,
            self.latency.clone(),
        );
        registry.register(
            "mnist_tch_batch_size",
            "Images per batch run by the inference thread",
            self.batch_images.clone(),
        );
        registry.register_with_unit(
            "mnist_tch_batch_duration",
            "Time the model took per batch",
            Unit::Seconds,
            self.batch_seconds.clone(),
        );
        registry.register("mnist_tch_images", "Images classified", self.images.clone());
        registry.register("mnist_tch_queue_depth", "Requests waiting for the inference thread", self.queued.clone());
        self
    }

    /// One answered request.
    pub fn record_request(&self, route: &str, status: u16, elapsed: Duration) {
        self.requests.get_or_create(&RouteCode { route: route.to_string(), code: status }).inc();
        let route = Route { route: route.to_string() };
        if status >= 400 {
            self.errors.get_or_create(&route).inc();
        }
        self.latency.get_or_create(&route).observe(elapsed.as_secs_f64());
    }

    /// One batch the inference thread ran.
    pub fn record_batch(&self, images: usize, elapsed: Duration) {
        self.images.inc_by(images as u64);
        self.batch_images.observe(images as f64);
        self.batch_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn queued(&self, change: i64) {
        self.queued.inc_by(change);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_type_served_is_the_formats() {
        assert_eq!(prometheus_text::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    }

    #[test]
    fn histograms_are_cumulative_and_counters_split_by_status() {
        let metrics = Metrics::default();
        metrics.record_request("/predict", 200, Duration::from_millis(3));
        metrics.record_request("/predict", 200, Duration::from_millis(30));
        metrics.record_request("/predict", 400, Duration::from_millis(1));
        metrics.record_batch(3, Duration::from_millis(2));
        let text = metrics.render();
        assert!(text.contains("mnist_tch_requests_total{route=\"/predict\",code=\"200\"} 2\n"), "{text}");
        assert!(text.contains("mnist_tch_errors_total{route=\"/predict\"} 1\n"), "{text}");
        assert!(text.contains("mnist_tch_request_duration_seconds_bucket{route=\"/predict\",le=\"0.001\"} 1\n"));
        assert!(text.contains("mnist_tch_request_duration_seconds_bucket{route=\"/predict\",le=\"0.005\"} 2\n"));
        assert!(text.contains("mnist_tch_request_duration_seconds_count{route=\"/predict\"} 3\n"));
        assert!(text.contains("mnist_tch_batch_size_bucket{le=\"2\"} 0\nmnist_tch_batch_size_bucket{le=\"4\"} 1\n"));
        assert!(text.contains("mnist_tch_images_total 3\n"));
    }

    /// The events behind `tests/fixtures/metrics.txt`: a bucket bound hit exactly (0.0005 s), values
    /// beyond the last bucket, several routes and statuses, a queue that went up and down.
    fn record_fixed_events(metrics: &Metrics) {
        let us = Duration::from_micros;
        metrics.record_request("/predict", 200, us(3_000));
        metrics.record_request("/predict", 200, us(30_000));
        metrics.record_request("/predict", 400, us(1_000));
        metrics.record_request("/predict", 413, us(200));
        metrics.record_request("/v2/models/{model}/infer", 200, Duration::from_secs(12));
        metrics.record_request("unmatched", 404, us(500));
        metrics.record_request("/metrics", 200, us(70));
        metrics.record_batch(3, us(2_000));
        metrics.record_batch(1, us(250));
        metrics.record_batch(600, us(1_500_000));
        metrics.queued(3);
        metrics.queued(-1);
    }

    /// A line of the exposition: a comment as it stands, or a sample as its name and labels (exact
    /// text) and its value (as a number: `0.00007` and `7e-5`, `604` and `604.0` are the same sample).
    fn parsed(line: &str) -> (String, Option<f64>) {
        if line.starts_with('#') {
            return (line.to_string(), None);
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        (series.to_string(), Some(value.parse().unwrap()))
    }

    /// Against the exposition recorded in `tests/fixtures/metrics.txt` for the same events: the same
    /// `# HELP`/`# TYPE` lines in the same order, and the same samples — names and labels character for
    /// character, values as numbers. Within a family, samples may come in another order (the client
    /// keeps label sets in a hash map); a histogram's lines stay together and in order.
    #[test]
    fn the_exposition_is_the_recorded_one() {
        let metrics = Metrics::default();
        record_fixed_events(&metrics);
        let text = metrics.render();
        let recorded = include_str!("../../tests/fixtures/metrics.txt");
        let comments = |text: &str| text.lines().filter(|l| l.starts_with('#')).map(String::from).collect::<Vec<_>>();
        assert_eq!(comments(&text), comments(recorded));
        let mut written: Vec<_> = text.lines().map(parsed).collect();
        let mut expected: Vec<_> = recorded.lines().map(parsed).collect();
        for lines in [&mut written, &mut expected] {
            lines.sort_by(|a, b| a.0.cmp(&b.0));
        }
        assert_eq!(written, expected, "{text}");
        // Each histogram's buckets, then its sum and count, as one block.
        let block = "mnist_tch_request_duration_seconds_bucket{route=\"/predict\",le=\"10\"} 4\n\
                     mnist_tch_request_duration_seconds_bucket{route=\"/predict\",le=\"+Inf\"} 4\n\
                     mnist_tch_request_duration_seconds_sum{route=\"/predict\"} ";
        assert!(text.contains(block), "{text}");
    }

    /// Before the first request, the request families have no sample and so no `# HELP`/`# TYPE` lines
    /// either (the recorded exposition had them, empty); the rest is there from the start.
    #[test]
    fn a_fresh_server_exposes_its_batch_and_queue_metrics() {
        let text = Metrics::default().render();
        assert!(!text.contains("mnist_tch_requests_total"), "{text}");
        assert!(text.contains("# TYPE mnist_tch_batch_size histogram\nmnist_tch_batch_size_bucket{le=\"1\"} 0\n"));
        assert!(text.contains("mnist_tch_batch_duration_seconds_count 0\n"), "{text}");
        assert!(text.contains("# TYPE mnist_tch_images_total counter\nmnist_tch_images_total 0\n"), "{text}");
        assert!(text.ends_with("# TYPE mnist_tch_queue_depth gauge\nmnist_tch_queue_depth 0\n"), "{text}");
    }
}
