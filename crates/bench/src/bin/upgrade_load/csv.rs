//! The CSV files of a run: one row per 100 ms bucket, per event and per
//! failed request.

use std::fs;
use std::path::{Path, PathBuf};

use crate::closes::KINDS;
use crate::load::{Failure, Outcome};
use crate::plan::Event;
use crate::report::{BUCKET_US, Bucket, percentile};

/// Writes `<out>/<name>-buckets.csv`, `-events.csv` and `-failures.csv`;
/// returns the paths of the first two.
pub fn write(
    out: &Path,
    name: &str,
    buckets: &[Bucket],
    events: &[Event],
    failures: &[&Failure],
) -> (PathBuf, PathBuf) {
    let mut csv = String::from(
        "t_s,responses,refused,reset,eof,timeout,non2xx,other,p50_ms,p99_ms,max_ms,pids,\
                      closed_said,closed_between_requests,closed_mid_answer\n",
    );
    for (i, bucket) in buckets.iter().enumerate() {
        let failed = |class: Outcome| bucket.failures.get(&class).copied().unwrap_or(0);
        let pids: Vec<String> = bucket.pids.iter().map(|(pid, n)| format!("{pid}:{n}")).collect();
        let closed: Vec<String> = KINDS.iter().map(|&how| bucket.closed.get(how).to_string()).collect();
        csv.push_str(&format!(
            "{:.1},{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{},{}\n",
            i as f64 * BUCKET_US as f64 / 1e6,
            bucket.ok,
            failed(Outcome::Refused),
            failed(Outcome::Reset),
            failed(Outcome::Eof),
            failed(Outcome::Timeout),
            failed(Outcome::Non2xx),
            failed(Outcome::Other),
            percentile(&bucket.latencies, 0.5) / 1e3,
            percentile(&bucket.latencies, 0.99) / 1e3,
            percentile(&bucket.latencies, 1.0) / 1e3,
            pids.join(";"),
            closed.join(",")
        ));
    }
    let write = |suffix: &str, text: &str| {
        let path = out.join(format!("{name}-{suffix}"));
        fs::write(&path, text).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
        path
    };
    let buckets_path = write("buckets.csv", &csv);
    let mut csv = String::from(
        "start_s,end_s,kind,ok,old_pid,new_pid,took_ms,startup_ms,frozen_ms,state_bytes,client_ms,detail\n",
    );
    for event in events {
        csv.push_str(&format!(
            "{:.4},{:.4},{},{},{},{},{},{},{},{},{:.3},{}\n",
            event.start_s,
            event.end_s,
            event.kind,
            event.ok,
            event.old_pid,
            event.new_pid,
            event.took_ms,
            event.startup_ms,
            event.frozen_ms,
            event.state_bytes,
            (event.end_s - event.start_s) * 1e3,
            event.detail.replace([',', '\n'], " ")
        ));
    }
    let events_path = write("events.csv", &csv);
    let mut csv = String::from("t_s,thread,class,pid,detail\n");
    for failure in failures {
        csv.push_str(&format!(
            "{:.6},{},{},{},{}\n",
            failure.t_us as f64 / 1e6,
            failure.thread,
            failure.outcome.name(),
            failure.pid,
            failure.detail
        ));
    }
    write("failures.csv", &csv);

    (buckets_path, events_path)
}
