//! Request counters and a latency histogram, rendered in Prometheus text format.
//!
//! These are what a real app must export for cryptus's metric gate: requests
//! by route and status, so Prometheus can compute a 5xx ratio per color.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(&'static str, u16), u64>,
    latency: BTreeMap<&'static str, Histogram>,
}

impl Metrics {
    pub fn observe(&self, route: &'static str, status: u16, elapsed: Duration) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        *inner.requests.entry((route, status)).or_default() += 1;
        let histogram = inner.latency.entry(route).or_default();
        let seconds = elapsed.as_secs_f64();
        for (slot, bound) in histogram.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *slot += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    pub fn render(&self, color: &str, version: &str, uptime: f64) -> String {
        let Ok(inner) = self.inner.lock() else {
            return String::new();
        };
        let labels = format!(
            "color=\"{}\",version=\"{}\"",
            escape(color),
            escape(version)
        );
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP cryptus_app_info The running app's color and version."
        );
        let _ = writeln!(out, "# TYPE cryptus_app_info gauge");
        let _ = writeln!(out, "cryptus_app_info{{{labels}}} 1");
        let _ = writeln!(
            out,
            "# HELP cryptus_app_uptime_seconds Seconds since the app started."
        );
        let _ = writeln!(out, "# TYPE cryptus_app_uptime_seconds gauge");
        let _ = writeln!(out, "cryptus_app_uptime_seconds{{{labels}}} {uptime:.3}");
        let _ = writeln!(
            out,
            "# HELP http_requests_total HTTP requests answered, by route and status."
        );
        let _ = writeln!(out, "# TYPE http_requests_total counter");
        for ((route, status), count) in &inner.requests {
            let _ = writeln!(
                out,
                "http_requests_total{{{labels},route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP http_request_duration_seconds Time to answer, by route."
        );
        let _ = writeln!(out, "# TYPE http_request_duration_seconds histogram");
        for (route, histogram) in &inner.latency {
            for (count, bound) in histogram.counts.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{{labels},route=\"{route}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{{labels},route=\"{route}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_sum{{{labels},route=\"{route}\"}} {:.6}",
                histogram.sum
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{{labels},route=\"{route}\"}} {}",
                histogram.count
            );
        }
        out
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_route_and_status_with_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.observe("/api/session", 200, Duration::from_millis(3));
        metrics.observe("/api/session", 500, Duration::from_millis(300));
        let text = metrics.render("green", "v2", 1.0);
        assert!(text.contains(
            "http_requests_total{color=\"green\",version=\"v2\",route=\"/api/session\",status=\"500\"} 1"
        ));
        assert!(text.contains("route=\"/api/session\",le=\"0.005\"} 1"));
        assert!(text.contains("route=\"/api/session\",le=\"0.5\"} 2"));
        assert!(text.contains("http_request_duration_seconds_count{color=\"green\",version=\"v2\",route=\"/api/session\"} 2"));
    }
}
