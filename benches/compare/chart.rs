//! The SVG charts: the two of the lockstep rows, `throughput.svg` and `latency.svg`, one
//! line per server with connections on a logarithmic x axis (1 to 5,000 connections would
//! otherwise crowd the first four points into a corner); and `attack.svg`, the honest p99
//! under each attack, one bar per server.

use std::error::Error;
use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::measuring::Measured;
use crate::plan::ServerSpec;
use crate::table::Summary;

/// Draws both charts into `out_dir` from the medians in `summaries`, one line per server
/// in `servers`; a chart with no lockstep row to show is not written.
pub fn draw_lockstep(
    out_dir: &Path,
    summaries: &[Summary],
    servers: &[&ServerSpec],
) -> Result<(), String> {
    for (file, title, y_label, scale, value) in [
        (
            "throughput.svg",
            "Throughput, lockstep TCP",
            "replies per second",
            Scale::Linear,
            (|m: &Measured| m.report.msgs_per_sec) as fn(&Measured) -> f64,
        ),
        (
            "latency.svg",
            "p99 latency, lockstep TCP",
            "p99 latency (µs, log scale)",
            Scale::Log,
            |m: &Measured| m.report.p99_us,
        ),
    ] {
        let path = out_dir.join(file);
        let series = lockstep_series(summaries, servers, value);
        if series.iter().all(|s| s.points.is_empty()) {
            continue;
        }
        draw(&path, title, y_label, scale, &series)
            .map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
    }
    Ok(())
}

/// One chart line per server: the median `value` of its lockstep TCP rows.
fn lockstep_series(
    summaries: &[Summary],
    servers: &[&ServerSpec],
    value: fn(&Measured) -> f64,
) -> Vec<Series> {
    servers
        .iter()
        .map(|spec| Series {
            name: spec.name.to_string(),
            points: summaries
                .iter()
                .filter(|s| s.server == spec.name && s.workload.is_lockstep_tcp())
                .filter_map(|s| {
                    let y = s.median(|m| (m.report.messages > 0.0).then(|| value(m)))?;
                    Some((s.workload.connections as f64, y))
                })
                .collect(),
        })
        .collect()
}

/// One server's line: (connections, value) points, in order of connections.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// How the y axis is scaled.
#[derive(Clone, Copy)]
enum Scale {
    /// From zero: throughput, where the eye compares heights.
    Linear,
    /// Logarithmic: latency, which spans microseconds to hundreds of milliseconds.
    Log,
}

impl Scale {
    /// Where the legend hides no data: throughput falls off towards the right, latency
    /// climbs towards it.
    fn legend_position(self) -> SeriesLabelPosition {
        match self {
            Scale::Linear => SeriesLabelPosition::UpperRight,
            Scale::Log => SeriesLabelPosition::UpperLeft,
        }
    }
}

const WIDTH: u32 = 900;
const HEIGHT: u32 = 560;

/// Server colours, in the order the series come; the same server keeps its colour in both
/// charts because the bench passes the series in the same order.
const COLOURS: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws `series` into an SVG file at `path`.
fn draw(
    path: &Path,
    title: &str,
    y_label: &str,
    scale: Scale,
    series: &[Series],
) -> Result<(), Box<dyn Error>> {
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let x_max = points().map(|(x, _)| x).fold(1.0, f64::max);
    let y_max = points().map(|(_, y)| y).fold(0.0, f64::max);
    let y_min = points()
        .map(|(_, y)| y)
        .filter(|&y| y > 0.0)
        .fold(f64::INFINITY, f64::min);
    // Some headroom around the data so the highest point and the legend do not collide.
    let x_range = (1.0..x_max * 1.5).log_scale();
    match scale {
        Scale::Linear => draw_with(
            path,
            title,
            y_label,
            scale,
            x_range,
            0.0..y_max * 1.15,
            series,
        ),
        Scale::Log => {
            let y_min = if y_min.is_finite() { y_min / 2.0 } else { 1.0 };
            let y_range = (y_min..(y_max * 2.0).max(y_min * 10.0)).log_scale();
            draw_with(path, title, y_label, scale, x_range, y_range, series)
        }
    }
}

fn draw_with<X, Y>(
    path: &Path,
    title: &str,
    y_label: &str,
    scale: Scale,
    x_range: X,
    y_range: Y,
    series: &[Series],
) -> Result<(), Box<dyn Error>>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range, y_range)?;
    chart
        .configure_mesh()
        .x_desc("concurrent connections (lockstep, log scale)")
        .y_desc(y_label)
        // A log axis gets a fine line at every 1..9 multiple; they drown the data.
        .light_line_style(WHITE)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| human(*y))
        .draw()?;

    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart.draw_series(
            s.points
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 3, colour.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(scale.legend_position())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Draws `attack.svg` into `out_dir`: for each attack row, a bar per server in `servers`
/// that ran it, as high as its median honest p99 (log scale, since an attack can take p99
/// from a millisecond to seconds). Not written if no attack row measured anything.
pub fn draw_attack(
    out_dir: &Path,
    summaries: &[Summary],
    servers: &[&ServerSpec],
) -> Result<(), String> {
    // The attacks in the order they ran, and each server's p99 under each.
    let mut attacks: Vec<&str> = Vec::new();
    for s in summaries {
        if let Some(attack) = &s.workload.attack {
            if !attacks.contains(&attack.label) {
                attacks.push(attack.label);
            }
        }
    }
    // Numbered among all the servers, so each keeps its colour from the other charts.
    let series: Vec<Bars> = servers
        .iter()
        .enumerate()
        .filter(|(_, spec)| spec.under_attack)
        .map(|(colour, spec)| {
            let bars = summaries
                .iter()
                .filter(|s| s.server == spec.name)
                .filter_map(|s| {
                    let attack = s.workload.attack.as_ref()?;
                    let at = attacks.iter().position(|&a| a == attack.label)?;
                    let p99 = s.median(|m| (m.report.messages > 0.0).then_some(m.report.p99_us))?;
                    Some((at, p99))
                })
                .collect();
            Bars {
                name: spec.name.to_string(),
                colour: COLOURS[colour % COLOURS.len()],
                bars,
            }
        })
        .collect();
    if series.iter().all(|s| s.bars.is_empty()) {
        return Ok(());
    }
    let path = out_dir.join("attack.svg");
    draw_bars(&path, &attacks, &series).map_err(|e| format!("cannot draw {}: {e}", path.display()))
}

/// One server's bars: (group, value) pairs.
struct Bars {
    name: String,
    colour: RGBColor,
    bars: Vec<(usize, f64)>,
}

/// Grouped bars: for each of `groups`, one bar per series, on a log y axis.
fn draw_bars(path: &Path, groups: &[&str], series: &[Bars]) -> Result<(), Box<dyn Error>> {
    let values = || series.iter().flat_map(|s| s.bars.iter().map(|b| b.1));
    let y_max = values().fold(1.0, f64::max);
    let y_min = values().filter(|&y| y > 0.0).fold(f64::INFINITY, f64::min);
    let y_min = if y_min.is_finite() { y_min / 2.0 } else { 1.0 };
    let y_range = (y_min..(y_max * 3.0).max(y_min * 10.0)).log_scale();
    let x_range = -0.5..groups.len() as f64 - 0.5;

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Honest p99 under attack (100 lockstep clients)",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range, y_range)?;
    let label = |x: &f64| {
        let at = x.round();
        match groups.get(at as usize) {
            Some(name) if (x - at).abs() < 1e-6 && at >= 0.0 => name.to_string(),
            _ => String::new(),
        }
    };
    chart
        .configure_mesh()
        .x_desc("attack, beside the honest clients")
        .y_desc("honest p99 latency (µs, log scale)")
        .light_line_style(WHITE)
        .disable_x_mesh()
        .x_labels(groups.len())
        .x_label_formatter(&label)
        .y_label_formatter(&|y| human(*y))
        .draw()?;

    // Each group is one unit wide; its bars share the middle 80%.
    let width = 0.8 / series.len().max(1) as f64;
    for (i, s) in series.iter().enumerate() {
        let colour = s.colour;
        let left = |group: usize| group as f64 - 0.4 + i as f64 * width;
        chart
            .draw_series(s.bars.iter().map(|&(group, p99)| {
                Rectangle::new(
                    [(left(group), y_min), (left(group) + width * 0.9, p99)],
                    colour.filled(),
                )
            }))?
            .label(s.name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// 1234567 as "1.2M", 45000 as "45k": axis labels stay short.
fn human(value: f64) -> String {
    match value.abs() {
        v if v >= 1e6 => format!("{:.1}M", value / 1e6),
        v if v >= 1e3 => format!("{:.0}k", value / 1e3),
        v if v >= 1.0 || v == 0.0 => format!("{value:.0}"),
        _ => format!("{value:.2}"),
    }
}
