//! What `GET /metrics` reports, in Prometheus's text format: requests and errors by route and status,
//! request latency, the batches the inference thread ran and how many requests wait for it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upper bounds of the batch-size buckets, in images.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A Prometheus histogram: cumulative counts are made when it is rendered.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last one is +Inf.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0 }
    }

    fn observe(&mut self, value: f64) {
        let bucket = self.bounds.iter().position(|&bound| value <= bound).unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()];
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

#[derive(Debug, Default)]
struct Counts {
    /// Requests by (route, status code).
    requests: BTreeMap<(String, u16), u64>,
    /// Latency by route.
    latency: BTreeMap<String, Histogram>,
    batch_images: Option<Histogram>,
    batch_seconds: Option<Histogram>,
    images: u64,
}

/// The server's counters, shared by the request handlers and the inference thread.
#[derive(Debug, Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
    /// Requests handed to the inference thread and not yet taken by it.
    queued: AtomicI64,
}

impl Metrics {
    /// One answered request.
    pub fn record_request(&self, route: &str, status: u16, elapsed: Duration) {
        let mut counts = self.lock();
        *counts.requests.entry((route.to_string(), status)).or_default() += 1;
        counts
            .latency
            .entry(route.to_string())
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
            .observe(elapsed.as_secs_f64());
    }

    /// One batch the inference thread ran.
    pub fn record_batch(&self, images: usize, elapsed: Duration) {
        let mut counts = self.lock();
        counts.images += images as u64;
        counts.batch_images.get_or_insert_with(|| Histogram::new(&BATCH_BUCKETS)).observe(images as f64);
        counts.batch_seconds.get_or_insert_with(|| Histogram::new(&LATENCY_BUCKETS)).observe(elapsed.as_secs_f64());
    }

    pub fn queued(&self, change: i64) {
        self.queued.fetch_add(change, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic while the lock was held cannot leave the counters inconsistent beyond one count.
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let counts = self.lock();
        let mut out = String::new();
        out.push_str("# HELP mnist_tch_requests_total HTTP requests answered, by route and status code.\n");
        out.push_str("# TYPE mnist_tch_requests_total counter\n");
        for ((route, status), n) in &counts.requests {
            let _ = writeln!(out, "mnist_tch_requests_total{{route=\"{route}\",code=\"{status}\"}} {n}");
        }
        out.push_str("# HELP mnist_tch_errors_total Requests answered with a 4xx or 5xx status, by route.\n");
        out.push_str("# TYPE mnist_tch_errors_total counter\n");
        let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
        for ((route, status), n) in &counts.requests {
            if *status >= 400 {
                *errors.entry(route).or_default() += n;
            }
        }
        for (route, n) in errors {
            let _ = writeln!(out, "mnist_tch_errors_total{{route=\"{route}\"}} {n}");
        }
        out.push_str("# HELP mnist_tch_request_duration_seconds Time from request to answer, by route.\n");
        out.push_str("# TYPE mnist_tch_request_duration_seconds histogram\n");
        for (route, histogram) in &counts.latency {
            histogram.render(&mut out, "mnist_tch_request_duration_seconds", &format!("route=\"{route}\""));
        }
        out.push_str("# HELP mnist_tch_batch_size Images per batch run by the inference thread.\n");
        out.push_str("# TYPE mnist_tch_batch_size histogram\n");
        counts.batch_images.clone().unwrap_or_else(|| Histogram::new(&BATCH_BUCKETS)).render(
            &mut out,
            "mnist_tch_batch_size",
            "",
        );
        out.push_str("# HELP mnist_tch_batch_duration_seconds Time the model took per batch.\n");
        out.push_str("# TYPE mnist_tch_batch_duration_seconds histogram\n");
        counts.batch_seconds.clone().unwrap_or_else(|| Histogram::new(&LATENCY_BUCKETS)).render(
            &mut out,
            "mnist_tch_batch_duration_seconds",
            "",
        );
        out.push_str("# HELP mnist_tch_images_total Images classified.\n# TYPE mnist_tch_images_total counter\n");
        let _ = writeln!(out, "mnist_tch_images_total {}", counts.images);
        out.push_str("# HELP mnist_tch_queue_depth Requests waiting for the inference thread.\n");
        out.push_str("# TYPE mnist_tch_queue_depth gauge\n");
        let _ = writeln!(out, "mnist_tch_queue_depth {}", self.queued.load(Ordering::Relaxed));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
