//! The benchmark's picture: request latency and failed requests over time,
//! per 100 ms, with every deploy and rollback marked where nginx began to
//! serve the new color; one panel per approach, on the same scales.

use std::path::Path;

use loadgen::{Kind, Sample};
use plotters::prelude::*;

/// The width of one bucket, in seconds.
const BUCKET: f64 = 0.1;
/// At most this many buckets per panel (an hour of 100 ms buckets): the
/// picture's data is bounded whatever the run's length.
const MAX_BUCKETS: usize = 36_000;

/// The requests that ended in one 100 ms.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bucket {
    pub requests: u32,
    pub failed: u32,
    /// The slowest answered request, in ms (the 2 s requests left out: they
    /// measure the drain, not the proxy).
    pub max_ms: f64,
}

/// One approach's panel.
pub struct Panel {
    pub title: String,
    pub buckets: Vec<Bucket>,
    /// Seconds from the panel's start, and whether it was a deploy.
    pub marks: Vec<(f64, bool)>,
}

/// The samples that ended between `from` and `to` (seconds from the load's
/// start), in 100 ms buckets.
pub fn buckets(samples: &[&Sample], from: f64, to: f64) -> Vec<Bucket> {
    let count = (((to - from) / BUCKET).ceil().max(0.0) as usize).min(MAX_BUCKETS);
    let mut buckets = vec![Bucket::default(); count];
    for sample in samples {
        let index = ((sample.at + sample.latency - from) / BUCKET).floor();
        if index < 0.0 {
            continue;
        }
        let Some(bucket) = buckets.get_mut(index as usize) else {
            continue;
        };
        bucket.requests += 1;
        if sample.outcome.failure_key().is_some() {
            bucket.failed += 1;
        } else if sample.kind != Kind::Slow {
            bucket.max_ms = bucket.max_ms.max(sample.latency * 1000.0);
        }
    }
    buckets
}

/// Writes the panels, one above the other, to an SVG file.
pub fn draw(path: &Path, panels: &[Panel]) -> Result<(), String> {
    let fail = |err: &dyn std::fmt::Display| format!("drawing {}: {err}", path.display());
    let seconds = panels
        .iter()
        .map(|p| p.buckets.len() as f64 * BUCKET)
        .fold(1.0, f64::max);
    let slowest = panels
        .iter()
        .flat_map(|p| &p.buckets)
        .map(|b| b.max_ms)
        .fold(10.0, f64::max)
        * 1.5;
    let most_failed = panels
        .iter()
        .flat_map(|p| &p.buckets)
        .map(|b| b.failed)
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.1;
    let rollback_color = RGBColor(230, 120, 0);
    let height = 380 * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (1400, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    for (panel, area) in panels
        .iter()
        .zip(root.split_evenly((panels.len().max(1), 1)))
    {
        let mut chart = ChartBuilder::on(&area)
            .caption(&panel.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .right_y_label_area_size(70)
            .build_cartesian_2d(0.0..seconds, (0.1..slowest).log_scale())
            .map_err(|e| fail(&e))?
            .set_secondary_coord(0.0..seconds, 0.0..most_failed);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("seconds from the approach's first flip")
            .x_label_formatter(&|s| format!("{s:.0}"))
            .y_desc("slowest answer per 100 ms (ms)")
            .y_label_formatter(&|ms| format!("{ms}"))
            .draw()
            .map_err(|e| fail(&e))?;
        chart
            .configure_secondary_axes()
            .y_desc("failed requests per 100 ms")
            .y_label_formatter(&|n| format!("{n:.0}"))
            .draw()
            .map_err(|e| fail(&e))?;
        for deploy in [true, false] {
            let (color, label) = if deploy {
                (BLUE, "deploy (traffic switched)")
            } else {
                (rollback_color, "rollback (traffic switched)")
            };
            let mut labelled = false;
            for &(at, _) in panel.marks.iter().filter(|(_, d)| *d == deploy) {
                let series = chart
                    .draw_series(LineSeries::new([(at, 0.1), (at, slowest)], color.mix(0.6)))
                    .map_err(|e| fail(&e))?;
                if !labelled {
                    series
                        .label(label)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
                    labelled = true;
                }
            }
        }
        let line = panel
            .buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| b.max_ms > 0.0)
            .map(|(i, b)| (i as f64 * BUCKET, b.max_ms.max(0.1)));
        chart
            .draw_series(LineSeries::new(line, BLACK.stroke_width(1)))
            .map_err(|e| fail(&e))?
            .label("slowest answer per 100 ms")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        let failures: Vec<Circle<(f64, f64), u32>> = panel
            .buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| b.failed > 0)
            .map(|(i, b)| Circle::new((i as f64 * BUCKET, f64::from(b.failed)), 3, RED.filled()))
            .collect();
        let total: u64 = panel.buckets.iter().map(|b| u64::from(b.failed)).sum();
        chart
            .draw_secondary_series(failures)
            .map_err(|e| fail(&e))?
            .label(format!("failed requests per 100 ms (total {total})"))
            .legend(|(x, y)| Circle::new((x + 10, y), 3, RED.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))
}
