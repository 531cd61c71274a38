//! `GET /metrics`, in the Prometheus text format.
//!
//! Written by hand: nearly every value is read from the engine's status at
//! scrape time, so a metrics registry would only hold second copies of
//! them; what the daemon counts itself (swaps, in-flight calls, responses)
//! is a few atomics and one histogram.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use std::sync::Mutex;

/// Upper bounds (seconds) of the swap duration histogram.
const SWAP_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Debug, Default)]
pub struct Metrics {
    pub inflight_calls: AtomicI64,
    responses: [AtomicU64; 5],
    swaps: Mutex<BTreeMap<String, SwapStats>>,
    /// State saves that failed, by module.
    saves_failed: Mutex<BTreeMap<String, u64>>,
    pub connections: std::sync::Arc<crate::connections::ConnectionStats>,
}

#[derive(Debug, Default, Clone)]
struct SwapStats {
    ok: u64,
    failed: u64,
    /// Per bucket of `SWAP_BUCKETS` (not cumulative), plus +Inf.
    buckets: [u64; SWAP_BUCKETS.len() + 1],
    seconds_total: f64,
}

impl Metrics {
    /// Counts one HTTP response on the public port by status class.
    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Relaxed);
    }

    pub fn swap_succeeded(&self, module: &str, took: Duration) {
        let mut swaps = self.swaps.lock().expect("metrics lock");
        let stats = swaps.entry(module.to_owned()).or_default();
        stats.ok += 1;
        let seconds = took.as_secs_f64();
        stats.seconds_total += seconds;
        let bucket = SWAP_BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(SWAP_BUCKETS.len());
        stats.buckets[bucket] += 1;
    }

    pub fn swap_failed(&self, module: &str) {
        self.swaps.lock().expect("metrics lock").entry(module.to_owned()).or_default().failed += 1;
    }

    pub fn save_failed(&self, module: &str) {
        *self.saves_failed.lock().expect("metrics lock").entry(module.to_owned()).or_default() += 1;
    }

    /// State saves that failed so far, by module.
    pub fn saves_failed(&self) -> BTreeMap<String, u64> {
        self.saves_failed.lock().expect("metrics lock").clone()
    }

    /// The whole exposition: the engine's view plus the daemon's own counters.
    pub fn render(&self, status: &hotswap::EngineStatus, uptime: Duration) -> String {
        let mut text = String::new();
        type Field = fn(&hotswap::VersionCalls) -> u64;
        let per_version: [(&str, &str, Field); 3] = [
            ("hotswap_calls_total", "Calls handled, by module and the version that served them.", |l| {
                l.calls
            }),
            ("hotswap_call_errors_total", "Calls the module refused (it returned an error).", |l| l.errors),
            ("hotswap_call_panics_total", "Calls in which the module panicked.", |l| l.panics),
        ];
        for (name, help, field) in per_version {
            header(&mut text, name, "counter", help);
            for module in &status.modules {
                for line in &module.by_version {
                    let (module, version) = (esc(&module.name), esc(&line.version));
                    let _ =
                        writeln!(text, "{name}{{module=\"{module}\",version=\"{version}\"}} {}", field(line));
                }
            }
        }
        header(&mut text, "hotswap_module_info", "gauge", "The version each module runs now (value 1).");
        for module in &status.modules {
            let _ = writeln!(
                text,
                "hotswap_module_info{{module=\"{}\",version=\"{}\"}} 1",
                esc(&module.name),
                esc(&module.current.version)
            );
        }
        header(&mut text, "hotswap_instances", "gauge", "Instances of each module.");
        for module in &status.modules {
            let _ =
                writeln!(text, "hotswap_instances{{module=\"{}\"}} {}", esc(&module.name), module.instances);
        }
        header(
            &mut text,
            "hotswap_resident_versions",
            "gauge",
            "Versions of each module mapped in memory: the current one plus retired ones that could not be unloaded.",
        );
        for module in &status.modules {
            let _ = writeln!(
                text,
                "hotswap_resident_versions{{module=\"{}\"}} {}",
                esc(&module.name),
                1 + module.resident_retired.len()
            );
        }
        header(
            &mut text,
            "hotswap_reclaimed_versions_total",
            "counter",
            "Retired versions whose code left memory.",
        );
        for module in &status.modules {
            let _ = writeln!(
                text,
                "hotswap_reclaimed_versions_total{{module=\"{}\"}} {}",
                esc(&module.name),
                module.reclaimed
            );
        }
        let swaps = self.swaps.lock().expect("metrics lock").clone();
        header(
            &mut text,
            "hotswap_swaps_total",
            "counter",
            "Swaps (loads after the first, rollbacks), by outcome.",
        );
        for (module, stats) in &swaps {
            let _ = writeln!(
                text,
                "hotswap_swaps_total{{module=\"{}\",outcome=\"ok\"}} {}",
                esc(module),
                stats.ok
            );
            let _ = writeln!(
                text,
                "hotswap_swaps_total{{module=\"{}\",outcome=\"refused\"}} {}",
                esc(module),
                stats.failed
            );
        }
        header(
            &mut text,
            "hotswap_swap_duration_seconds",
            "histogram",
            "Time from the swap request until calls run on the new version.",
        );
        for (module, stats) in &swaps {
            let mut cumulative = 0;
            for (bound, count) in SWAP_BUCKETS.iter().zip(&stats.buckets) {
                cumulative += count;
                let _ = writeln!(
                    text,
                    "hotswap_swap_duration_seconds_bucket{{module=\"{}\",le=\"{bound}\"}} {cumulative}",
                    esc(module)
                );
            }
            cumulative += stats.buckets[SWAP_BUCKETS.len()];
            let _ = writeln!(
                text,
                "hotswap_swap_duration_seconds_bucket{{module=\"{}\",le=\"+Inf\"}} {cumulative}",
                esc(module)
            );
            let _ = writeln!(
                text,
                "hotswap_swap_duration_seconds_sum{{module=\"{}\"}} {}",
                esc(module),
                stats.seconds_total
            );
            let _ = writeln!(
                text,
                "hotswap_swap_duration_seconds_count{{module=\"{}\"}} {cumulative}",
                esc(module)
            );
        }
        header(&mut text, "hotswap_inflight_calls", "gauge", "Module calls running now on the public port.");
        let _ = writeln!(text, "hotswap_inflight_calls {}", self.inflight_calls.load(Relaxed).max(0));
        header(
            &mut text,
            "hotswap_http_responses_total",
            "counter",
            "Responses on the public port, by status class.",
        );
        for (class, count) in self.responses.iter().enumerate() {
            let _ = writeln!(
                text,
                "hotswap_http_responses_total{{class=\"{}xx\"}} {}",
                class + 1,
                count.load(Relaxed)
            );
        }
        header(
            &mut text,
            "hotswap_state_saves_failed_total",
            "counter",
            "State saves (periodic, before a swap, on request, at shutdown) that failed, by module.",
        );
        for (module, failed) in self.saves_failed() {
            let _ =
                writeln!(text, "hotswap_state_saves_failed_total{{module=\"{}\"}} {failed}", esc(&module));
        }
        let connections = &self.connections;
        header(&mut text, "hotswap_public_connections", "gauge", "Open connections on the public port.");
        let _ = writeln!(text, "hotswap_public_connections {}", connections.open.load(Relaxed));
        header(
            &mut text,
            "hotswap_public_connections_max",
            "gauge",
            "The cap on open public connections (server.max_connections, fitted to the descriptor limit).",
        );
        let _ = writeln!(text, "hotswap_public_connections_max {}", connections.max.load(Relaxed));
        header(
            &mut text,
            "hotswap_public_connections_refused_total",
            "counter",
            "Public connections closed at once because the cap was reached.",
        );
        let _ =
            writeln!(text, "hotswap_public_connections_refused_total {}", connections.refused.load(Relaxed));
        header(&mut text, "hotswap_uptime_seconds", "gauge", "Seconds since this process started.");
        let _ = writeln!(text, "hotswap_uptime_seconds {}", uptime.as_secs_f64());
        text
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, quote, newline).
fn esc(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
