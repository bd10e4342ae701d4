//! The benches' pictures (`--svg FILE`): SVG charts of what a bench just
//! measured, drawn with `plotters`' SVG backend.
//!
//! Only the SVG backend is built: it writes text as SVG `<text>` elements
//! (the viewer picks the font) and sizes labels by an estimate, so drawing
//! needs no font files and no system libraries, and a chart is a small text
//! file that can live in `docs/` and be read in a diff.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::CliError;

/// Width and height of every chart, in pixels.
const SIZE: (u32, u32) = (900, 500);
/// The series' colours, in order: the baseline first.
const COLOURS: [RGBColor; 4] = [
    RGBColor(0x44, 0x44, 0x44),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
];

/// Any drawing failure, as the file that could not be written.
fn failed<E: std::error::Error + Send + Sync>(path: &Path, e: DrawingAreaErrorKind<E>) -> CliError {
    CliError::WriteFile {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn canvas(path: &Path) -> Result<DrawingArea<SVGBackend<'_>, Shift>, CliError> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(path, e))?;
    Ok(root)
}

/// A chart on `root` with its title and the sizes of its axes' label areas.
fn builder<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    x_labels: u32,
    y_labels: u32,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut b = ChartBuilder::on(root);
    b.caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(x_labels)
        .y_label_area_size(y_labels);
    b
}

/// A logarithmic axis' range for `values` (those above zero), widened by
/// `margin` times on both ends; `1..10` when there is nothing to show.
fn log_range(values: impl Iterator<Item = f64>, margin: f64) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo.is_finite() {
        (lo / margin, hi * margin)
    } else {
        (1.0, 10.0)
    }
}

/// One line of a distribution chart: a name and its latencies at the
/// percentiles 0, 1, …, 100 (µs).
pub struct Distribution<'a> {
    /// The legend's words.
    pub name: &'a str,
    /// `percentiles[i]`: the latency below which `i` % of the samples lie.
    pub percentiles: &'a [f64],
}

/// Writes the latency distributions as a chart: for each series the share
/// of samples (y, %) at or below a latency (x, µs, logarithmic, so a 10 µs
/// and a 1 ms tail are both readable).
pub fn distribution(path: &Path, title: &str, series: &[Distribution<'_>]) -> Result<(), CliError> {
    let (lo, hi) = log_range(
        series.iter().flat_map(|s| s.percentiles.iter().copied()),
        1.25,
    );
    let root = canvas(path)?;
    let mut chart = builder(&root, title, 45, 55)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..100.0)
        .map_err(|e| failed(path, e))?;
    chart
        .configure_mesh()
        .x_desc("latency from bpf_ringbuf_submit to the consumer's callback (µs)")
        .y_desc("records (%)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| failed(path, e))?;
    for (s, colour) in series.iter().zip(COLOURS.iter().cycle()) {
        let points = s
            .percentiles
            .iter()
            .enumerate()
            .filter(|(_, v)| **v > 0.0)
            .map(|(i, v)| {
                (
                    *v,
                    i as f64 * 100.0 / (s.percentiles.len() - 1).max(1) as f64,
                )
            });
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| failed(path, e))?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| failed(path, e))?;
    root.present().map_err(|e| failed(path, e))
}

/// Writes grouped bars: for each group (x) one bar per series (its value,
/// y, logarithmic: a per-pointer walk and a direct one differ a
/// hundredfold); a missing value leaves a gap.
pub fn bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    groups: &[&str],
    series: &[&str],
    value: impl Fn(usize, usize) -> Option<f64>,
) -> Result<(), CliError> {
    let (lo, hi) = log_range(
        (0..groups.len())
            .flat_map(|g| (0..series.len()).map(move |s| (g, s)))
            .filter_map(|(g, s)| value(g, s)),
        2.0,
    );
    let root = canvas(path)?;
    let mut chart = builder(&root, title, 35, 65)
        .build_cartesian_2d(-0.5..groups.len() as f64 - 0.5, (lo..hi).log_scale())
        .map_err(|e| failed(path, e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 {
                groups.get(i as usize).copied().unwrap_or("").to_string()
            } else {
                String::new()
            }
        })
        .y_desc(y_desc)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| failed(path, e))?;
    // Each group spans 0.8 of its unit, split evenly between the series.
    let width = 0.8 / series.len().max(1) as f64;
    for (s, (name, colour)) in series.iter().zip(COLOURS.iter().cycle()).enumerate() {
        let bars = (0..groups.len()).filter_map(|g| {
            let v = value(g, s).filter(|v| *v > 0.0)?;
            let x0 = g as f64 - 0.4 + s as f64 * width;
            Some(Rectangle::new(
                [(x0, lo), (x0 + width * 0.9, v)],
                colour.filled(),
            ))
        });
        chart
            .draw_series(bars)
            .map_err(|e| failed(path, e))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| failed(path, e))?;
    root.present().map_err(|e| failed(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("telebpf-chart-{}-{name}.svg", std::process::id()))
    }

    /// A distribution chart is an SVG with both series named in its legend.
    #[test]
    fn a_distribution_chart_names_its_series() {
        let path = temp("dist");
        let local: Vec<f64> = (0..=100).map(|i| 5.0 + i as f64 * 0.2).collect();
        let forwarded: Vec<f64> = (0..=100).map(|i| 12.0 + i as f64).collect();
        distribution(
            &path,
            "one at a time",
            &[
                Distribution {
                    name: "local",
                    percentiles: &local,
                },
                Distribution {
                    name: "forwarded",
                    percentiles: &forwarded,
                },
            ],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains(">\nlocal\n<") && svg.contains(">\nforwarded\n<"));
        assert!(svg.contains("<polyline"));
    }

    /// A bar chart draws one bar per present value and leaves gaps for the
    /// missing ones; its groups are the x labels.
    #[test]
    fn a_bar_chart_draws_present_values_only() {
        let path = temp("bars");
        let v = [[Some(10.0), None], [Some(2000.0), Some(40.0)]];
        bars(
            &path,
            "walks",
            "µs",
            &["tcp", "udp"],
            &["direct", "per-pointer"],
            |g, s| v[g][s],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(svg.contains(">\ntcp\n<") && svg.contains(">\nudp\n<"));
        assert!(svg.contains(">\nper-pointer\n<"));
        // Three bars, the background, the legend's box (its fill and its
        // border) and two swatches.
        let rects = svg.matches("<rect").count();
        assert_eq!(rects, 3 + 1 + 2 + 2, "{svg}");
    }

    /// Nothing to draw still makes a valid, empty chart.
    #[test]
    fn empty_data_still_draws() {
        let path = temp("empty");
        bars(&path, "none", "µs", &[], &["direct"], |_, _| None).unwrap();
        distribution(&path, "none", &[]).unwrap();
        std::fs::remove_file(&path).unwrap();
    }
}
