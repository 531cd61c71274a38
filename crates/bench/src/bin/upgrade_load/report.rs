//! The figures of a run: requests per 100 ms bucket, the steady windows
//! against the windows around the upgrades, and the medians over runs.

use std::collections::{BTreeMap, BTreeSet};

use crate::closes::{self, PerKind};
use crate::csv;
use crate::load::{ClientResult, FAILURE_CLASSES, Failure, Outcome};
use crate::options::{Options, Plan};
use crate::plan::Event;

/// The width of one bucket, in µs.
pub const BUCKET_US: u64 = 100_000;
/// Buckets before this are warm-up, never "steady".
const WARM_UP_S: f64 = 1.0;
/// A steady bucket is at least this far from every event.
const QUIET_S: f64 = 1.0;
/// The window counted as "during an upgrade": the trigger ± this.
pub const HALF_WINDOW_S: f64 = 0.5;

#[derive(Debug, Default, Clone)]
pub struct Bucket {
    pub ok: u64,
    pub failures: BTreeMap<Outcome, u64>,
    /// Of the ok responses, in µs, sorted.
    pub latencies: Vec<u32>,
    /// Ok responses per pid that answered.
    pub pids: BTreeMap<u32, u64>,
    /// Keep-alive connections the server closed.
    pub closed: PerKind,
}

/// The figures of one run.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    steady_rps: f64,
    upgrade_rps: f64,
    worst_window_rps: f64,
    ratio: f64,
    ok: u64,
    failures: u64,
    upgrades: usize,
    upgrades_failed: usize,
    took_ms: f64,
    startup_ms: f64,
    rest_ms: f64,
    frozen_ms: f64,
    client_ms: f64,
    steady_p99_ms: f64,
    upgrade_p99_ms: f64,
    closed_in_upgrades: u64,
    closed_steady: u64,
}

pub fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    f64::from(sorted[((sorted.len() - 1) as f64 * q).round() as usize])
}

fn median(values: &[f64]) -> f64 {
    let mut values: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

/// Sorts every request of a run into its 100 ms bucket (the partial ones
/// past the duration left out), and the failures by time.
fn sort_into_buckets<'a>(options: &Options, results: &'a [ClientResult]) -> (Vec<Bucket>, Vec<&'a Failure>) {
    let count = (options.duration.as_micros() as u64).div_ceil(BUCKET_US) as usize + 1;
    let mut buckets = vec![Bucket::default(); count];
    let mut failures: Vec<&Failure> = Vec::new();
    for result in results {
        for record in &result.records {
            let bucket = &mut buckets[(u64::from(record.t_us) / BUCKET_US).min(count as u64 - 1) as usize];
            if record.outcome == Outcome::Ok {
                bucket.ok += 1;
                bucket.latencies.push(record.lat_us);
                *bucket.pids.entry(record.pid).or_default() += 1;
            } else {
                *bucket.failures.entry(record.outcome).or_default() += 1;
            }
        }
        for close in &result.server_closes {
            buckets[(u64::from(close.t_us) / BUCKET_US).min(count as u64 - 1) as usize].closed.add(close.how);
        }
        failures.extend(&result.failures);
    }
    failures.sort_by_key(|failure| failure.t_us);
    for bucket in &mut buckets {
        bucket.latencies.sort_unstable();
    }
    // The last bucket(s) past the duration are partial: not written.
    let full = (options.duration.as_micros() as u64 / BUCKET_US) as usize;
    buckets.truncate(full);

    (buckets, failures)
}

/// Writes the run's CSV files and prints its summary (and `extra`, what the
/// harness checked at the end).
pub fn report(
    options: &Options,
    name: &str,
    results: Vec<ClientResult>,
    events: Vec<Event>,
    extra: Vec<String>,
) -> RunSummary {
    let (buckets, failures) = sort_into_buckets(options, &results);
    let (buckets_path, events_path) = csv::write(&options.out, name, &buckets, &events, &failures);

    // Windows.
    let upgrades: Vec<&Event> = events.iter().filter(|e| e.kind == "upgrade").collect();
    let bucket_s = BUCKET_US as f64 / 1e6;
    let steady: Vec<usize> = (0..buckets.len())
        .filter(|&i| {
            let (from, to) = (i as f64 * bucket_s, (i + 1) as f64 * bucket_s);
            from >= WARM_UP_S
                && events
                    .iter()
                    .all(|e| to <= e.start_s - QUIET_S || from >= e.end_s.max(e.start_s) + QUIET_S)
        })
        .collect();
    let rate = |indices: &[usize]| {
        indices.iter().map(|&i| buckets[i].ok).sum::<u64>() as f64 / (indices.len() as f64 * bucket_s)
    };
    let p99 = |indices: &[usize]| {
        let mut all: Vec<u32> = indices.iter().flat_map(|&i| buckets[i].latencies.iter().copied()).collect();
        all.sort_unstable();
        percentile(&all, 0.99) / 1e3
    };
    let steady_rps = rate(&steady);
    let windows: Vec<Vec<usize>> = upgrades
        .iter()
        .map(|e| {
            let first = ((e.start_s - HALF_WINDOW_S) / bucket_s).round().max(0.0) as usize;
            (first..(first + (2.0 * HALF_WINDOW_S / bucket_s).round() as usize).min(buckets.len())).collect()
        })
        .collect();
    let all_windows: Vec<usize> = windows.iter().flatten().copied().collect();
    let upgrade_rps = rate(&all_windows);
    let worst_window_rps = windows.iter().map(|w| rate(w)).fold(f64::INFINITY, f64::min);
    let worst_bucket = all_windows.iter().map(|&i| buckets[i].ok).min().unwrap_or(0);

    let ok: u64 = buckets.iter().map(|b| b.ok).sum::<u64>();
    let ok_all: u64 = results.iter().map(|r| r.acked).sum();
    let failed = failures.len() as u64;
    let ms =
        |pick: fn(&Event) -> f64| upgrades.iter().filter(|e| e.ok).map(|e| pick(e)).collect::<Vec<f64>>();
    let took = ms(|e| e.took_ms);
    let startup = ms(|e| e.startup_ms);
    let rest = ms(|e| e.took_ms - e.startup_ms);
    let frozen = ms(|e| e.frozen_ms);
    let client_ms = ms(|e| (e.end_s - e.start_s) * 1e3);
    let closed = closes::count(&results, &upgrades);
    let summary = RunSummary {
        steady_rps,
        upgrade_rps,
        worst_window_rps,
        ratio: upgrade_rps / steady_rps,
        ok: ok_all,
        failures: failed,
        upgrades: upgrades.iter().filter(|e| e.ok).count(),
        upgrades_failed: upgrades.iter().filter(|e| !e.ok).count(),
        took_ms: median(&took),
        startup_ms: median(&startup),
        rest_ms: median(&rest),
        frozen_ms: median(&frozen),
        client_ms: median(&client_ms),
        steady_p99_ms: p99(&steady),
        upgrade_p99_ms: p99(&all_windows),
        closed_in_upgrades: closed.upgrade.total(),
        closed_steady: closed.steady.total(),
    };

    println!("\n{name}: {} ok responses ({} in full buckets), {failed} failed", ok_all, ok);
    for class in FAILURE_CLASSES {
        let n = failures.iter().filter(|f| f.outcome == class).count();
        if n > 0 {
            println!("  {:<8} {n}", class.name());
        }
    }
    for failure in failures.iter().take(20) {
        println!(
            "  FAILED at {:.6} s, thread {}, {} (pid {}): {}",
            failure.t_us as f64 / 1e6,
            failure.thread,
            failure.outcome.name(),
            failure.pid,
            failure.detail
        );
    }
    println!(
        "  steady: {:.0} req/s over {} buckets (≥ {QUIET_S} s from any event, after {WARM_UP_S} s), p99 {:.2} ms",
        steady_rps,
        steady.len(),
        summary.steady_p99_ms
    );
    println!(
        "  during upgrades (trigger ± {HALF_WINDOW_S} s, {} windows): {:.0} req/s = {:.1}% of steady, p99 {:.2} ms; worst window {:.0} req/s ({:.1}%), worst 100 ms bucket {} responses ({:.1}% of steady)",
        windows.len(),
        upgrade_rps,
        100.0 * summary.ratio,
        summary.upgrade_p99_ms,
        worst_window_rps,
        100.0 * worst_window_rps / steady_rps,
        worst_bucket,
        100.0 * worst_bucket as f64 / (steady_rps * bucket_s)
    );
    if !took.is_empty() {
        println!(
            "  upgrades: {} ok, {} failed; medians: took {:.1} ms = start-up {:.1} ms + rest {:.1} ms (max rest {:.1} ms); frozen {:.1} ms (max {:.1}); admin request {:.1} ms",
            summary.upgrades,
            summary.upgrades_failed,
            summary.took_ms,
            summary.startup_ms,
            summary.rest_ms,
            max(&rest),
            summary.frozen_ms,
            max(&frozen),
            summary.client_ms
        );
    }
    println!("  {}", closes::line(&closed, options.keepalive, upgrades.len()));
    let mut pids: BTreeSet<u32> = BTreeSet::new();
    for bucket in &buckets {
        pids.extend(bucket.pids.keys());
    }
    println!("  {} pids served responses", pids.len());
    if options.plan == Plan::State && options.nginx.is_none() {
        let mut size = 0u64;
        let mut per_size: BTreeMap<u64, Vec<&Event>> = BTreeMap::new();
        for event in &events {
            match event.kind.as_str() {
                "resize" => size = event.state_bytes,
                "upgrade" => per_size.entry(size).or_default().push(event),
                _ => {}
            }
        }
        for (size, ups) in per_size {
            let ok: Vec<&&Event> = ups.iter().filter(|e| e.ok).collect();
            let f = |pick: fn(&Event) -> f64| ok.iter().map(|e| pick(e)).collect::<Vec<f64>>();
            println!(
                "  blob state {} MiB: {} upgrades ok of {}; frozen median {:.0} ms max {:.0} ms; took median {:.0} ms max {:.0} ms; startup median {:.0} ms; state_bytes {:?}; failed: {:?}",
                size >> 20,
                ok.len(),
                ups.len(),
                median(&f(|e| e.frozen_ms)),
                max(&f(|e| e.frozen_ms)),
                median(&f(|e| e.took_ms)),
                max(&f(|e| e.took_ms)),
                median(&f(|e| e.startup_ms)),
                ok.first().map(|e| e.state_bytes),
                ups.iter().filter(|e| !e.ok).map(|e| e.detail.clone()).collect::<Vec<_>>()
            );
        }
    }
    for line in extra {
        println!("  {line}");
    }
    println!("  wrote {} and {}", buckets_path.display(), events_path.display());
    summary
}

/// One figure of a run.
type Pick = fn(&RunSummary) -> f64;

/// The median of each figure over the runs, with each run's value.
pub fn print_medians(summaries: &[RunSummary]) {
    let pick = |f: fn(&RunSummary) -> f64| -> (f64, String) {
        let values: Vec<f64> = summaries.iter().map(f).collect();
        let each: Vec<String> = values.iter().map(|v| format!("{v:.1}")).collect();
        (median(&values), each.join(", "))
    };
    println!("\n=== medians of {} runs (each run's value in brackets) ===", summaries.len());
    let rows: [(&str, Pick); 15] = [
        ("steady req/s", |s| s.steady_rps),
        ("req/s during upgrades", |s| s.upgrade_rps),
        ("during / steady (%)", |s| 100.0 * s.ratio),
        ("worst window req/s", |s| s.worst_window_rps),
        ("steady p99 (ms)", |s| s.steady_p99_ms),
        ("p99 during upgrades (ms)", |s| s.upgrade_p99_ms),
        ("ok responses", |s| s.ok as f64),
        ("failed requests", |s| s.failures as f64),
        ("keep-alive closed, upgrades", |s| s.closed_in_upgrades as f64),
        ("keep-alive closed, steady", |s| s.closed_steady as f64),
        ("upgrades ok", |s| s.upgrades as f64),
        ("took_ms (median)", |s| s.took_ms),
        ("startup_ms (median)", |s| s.startup_ms),
        ("took - startup (median ms)", |s| s.rest_ms),
        ("frozen_ms (median)", |s| s.frozen_ms),
    ];
    for (label, f) in rows {
        let (value, each) = pick(f);
        println!("  {label:<28} {value:>10.1}   [{each}]");
    }
    let failed: u64 = summaries.iter().map(|s| s.failures).sum();
    let upgrades_failed: usize = summaries.iter().map(|s| s.upgrades_failed).sum();
    println!("  total failed requests {failed}, failed upgrades {upgrades_failed}");
}
