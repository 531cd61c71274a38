//! Draws one `upgrade-load` run as an SVG timeline: requests/s and p99
//! latency per 100 ms, with the process upgrades and module swaps marked.
//!
//! ```sh
//! cargo run --release -p hotswap-bench --bin upgrade-load -- --runs 3
//! cargo run --release -p hotswap-bench --bin upgrade-plot -- \
//!     --run target/upgrade-load/run1 --out docs/upgrade-timeline.svg
//! ```
//!
//! `--run PREFIX` names `PREFIX-buckets.csv` and `PREFIX-events.csv` (as
//! `upgrade-load` writes them); `--title TEXT` replaces the title.

use std::fs;
use std::path::PathBuf;

use plotters::prelude::*;

/// One row of `*-buckets.csv`.
#[derive(Debug)]
struct Bucket {
    t_s: f64,
    responses: f64,
    failed: f64,
    p99_ms: f64,
}

/// One row of `*-events.csv`.
#[derive(Debug)]
struct Event {
    start_s: f64,
    end_s: f64,
    kind: String,
}

const BUCKET_S: f64 = 0.1;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut run = PathBuf::from("target/upgrade-load/run1");
    let mut out = PathBuf::from("docs/upgrade-timeline.svg");
    let mut title = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--run" => run = PathBuf::from(args.next().expect("--run takes a path prefix")),
            "--out" => out = PathBuf::from(args.next().expect("--out takes a path")),
            "--title" => title = Some(args.next().expect("--title takes a text")),
            other => panic!(
                "unknown argument {other:?}; usage: upgrade-plot [--run PREFIX] [--out SVG] [--title TEXT]"
            ),
        }
    }
    let read = |suffix: &str| {
        let path = format!("{}-{suffix}", run.display());
        fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {path}: {err}"))
    };
    let buckets: Vec<Bucket> = rows(&read("buckets.csv"))
        .map(|row| {
            let number = |name: &str| row.get(name).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
            let failed: f64 = ["refused", "reset", "eof", "timeout", "non2xx", "other"]
                .iter()
                .map(|class| number(class))
                .sum();
            Bucket { t_s: number("t_s"), responses: number("responses"), failed, p99_ms: number("p99_ms") }
        })
        .collect();
    let events: Vec<Event> = rows(&read("events.csv"))
        .map(|row| Event {
            start_s: row.get("start_s").and_then(|v| v.parse().ok()).unwrap_or(f64::NAN),
            end_s: row.get("end_s").and_then(|v| v.parse().ok()).unwrap_or(f64::NAN),
            kind: row.get("kind").cloned().unwrap_or_default(),
        })
        .collect();
    assert!(!buckets.is_empty(), "no buckets in {}-buckets.csv", run.display());

    // The same "steady" as upgrade-load: ≥ 1 s from every event, after 1 s.
    let steady: Vec<f64> = buckets
        .iter()
        .filter(|b| {
            b.t_s >= 1.0
                && events
                    .iter()
                    .all(|e| b.t_s + BUCKET_S <= e.start_s - 1.0 || b.t_s >= e.end_s.max(e.start_s) + 1.0)
        })
        .map(|b| b.responses / BUCKET_S)
        .collect();
    let steady_rps = steady.iter().sum::<f64>() / steady.len().max(1) as f64;
    let failed: f64 = buckets.iter().map(|b| b.failed).sum();
    let upgrades = events.iter().filter(|e| e.kind == "upgrade").count();
    let swaps = events.iter().filter(|e| e.kind.starts_with("swap")).count();
    let end_s = buckets.last().map_or(1.0, |b| b.t_s + BUCKET_S);
    let max_rps = buckets.iter().map(|b| b.responses / BUCKET_S).fold(0.0, f64::max) * 1.15;
    let max_p99 = buckets.iter().map(|b| b.p99_ms).filter(|v| v.is_finite()).fold(0.0, f64::max) * 1.2;
    let title = title.unwrap_or_else(|| {
        format!(
            "hotswap under load: {upgrades} process upgrades and {swaps} module swaps, {} failed requests",
            failed as u64
        )
    });

    let root = SVGBackend::new(&out, (1200, 760)).into_drawing_area();
    root.fill(&WHITE).expect("draw");
    let root = root.titled(&title, ("sans-serif", 24)).expect("draw");
    let (top, bottom) = root.split_vertically(380);

    let upgrade_style = ShapeStyle::from(&RED).stroke_width(2);
    let swap_style = ShapeStyle::from(&RGBColor(90, 90, 90)).stroke_width(1);
    let marks = |chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<_, _>>, top: f64| {
        let mut first = true;
        for event in events.iter().filter(|e| e.kind == "upgrade") {
            let series = chart
                .draw_series(LineSeries::new([(event.start_s, 0.0), (event.start_s, top)], upgrade_style))
                .expect("draw");
            if first {
                series
                    .label("process upgrade (POST /v1/upgrade)")
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], upgrade_style));
                first = false;
            }
        }
        let mut first = true;
        for event in events.iter().filter(|e| e.kind.starts_with("swap")) {
            let series = chart
                .draw_series(DashedLineSeries::new(
                    [(event.start_s, 0.0), (event.start_s, top)],
                    4,
                    4,
                    swap_style,
                ))
                .expect("draw");
            if first {
                series
                    .label("module swap (counter v1 <-> v2)")
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], swap_style));
                first = false;
            }
        }
    };

    let mut chart = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .caption("Throughput (completed requests per 100 ms, scaled to per second)", ("sans-serif", 18))
        .build_cartesian_2d(0.0..end_s, 0.0..max_rps)
        .expect("draw");
    chart
        .configure_mesh()
        .x_desc("time since the load started (s)")
        .y_desc("requests/s")
        .y_label_formatter(&|v| format!("{:.0}k", v / 1e3))
        .light_line_style(WHITE)
        .draw()
        .expect("draw");
    let blue = ShapeStyle::from(&BLUE).stroke_width(2);
    chart
        .draw_series(LineSeries::new(
            buckets.iter().map(|b| (b.t_s + BUCKET_S / 2.0, b.responses / BUCKET_S)),
            blue,
        ))
        .expect("draw")
        .label("requests/s")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], blue));
    let green = ShapeStyle::from(&RGBColor(0, 140, 0)).stroke_width(1);
    chart
        .draw_series(DashedLineSeries::new(
            [(0.0, 0.95 * steady_rps), (end_s, 0.95 * steady_rps)],
            6,
            4,
            green,
        ))
        .expect("draw")
        .label(format!("95% of steady ({:.0}k req/s)", 0.95 * steady_rps / 1e3))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], green));
    marks(&mut chart, max_rps);
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .expect("draw");

    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .caption(
            "Latency p99 per 100 ms (ms), from writing a request to its whole response",
            ("sans-serif", 18),
        )
        .build_cartesian_2d(0.0..end_s, 0.0..max_p99)
        .expect("draw");
    chart
        .configure_mesh()
        .x_desc("time since the load started (s)")
        .y_desc("p99 latency (ms)")
        .y_label_formatter(&|v| format!("{v:.1}"))
        .light_line_style(WHITE)
        .draw()
        .expect("draw");
    let purple = ShapeStyle::from(&RGBColor(150, 0, 150)).stroke_width(2);
    chart
        .draw_series(LineSeries::new(
            buckets.iter().filter(|b| b.p99_ms.is_finite()).map(|b| (b.t_s + BUCKET_S / 2.0, b.p99_ms)),
            purple,
        ))
        .expect("draw")
        .label("p99 latency")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], purple));
    marks(&mut chart, max_p99);
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .expect("draw");
    root.present().expect("write the SVG");
    println!(
        "wrote {} ({} buckets, {upgrades} upgrades, {swaps} swaps, steady {:.0} req/s)",
        out.display(),
        buckets.len(),
        steady_rps
    );
}

/// The rows of a CSV file with a header line and no quoted fields.
fn rows(text: &str) -> impl Iterator<Item = std::collections::HashMap<String, String>> + '_ {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    lines.filter(|line| !line.is_empty()).map(move |line| {
        header
            .iter()
            .zip(line.split(','))
            .map(|(name, value)| ((*name).to_owned(), value.to_owned()))
            .collect()
    })
}
