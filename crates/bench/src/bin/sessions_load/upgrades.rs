//! Part 4: the load of `broadcast` through process upgrades instead of
//! module swaps. Every session should move with its connection (no close);
//! a closed session (a daemon of before sessions moved closes them all with
//! 1001 "going away"; nginx's anchor drops them, see `nginx.rs`) joins its
//! room again and goes on, and is counted, so a run against such a server
//! completes and shows what it costs.

use std::time::Instant;

use crate::Options;
use crate::clients::{self, SessionResult};
use crate::server::{Server, Upgrade, median};
use crate::tally::{BroadcastRun, print_sessions_ended, round_trips_text, tally};

/// The figures of one run.
#[derive(Debug, Default)]
pub struct UpgradeRun {
    pub sessions: BroadcastRun,
    pub upgrades: Vec<Upgrade>,
    /// Per upgrade: the closes the sessions saw from its request until the
    /// next one's (the last: until the end), as (1001, other codes, dropped).
    pub closes_per_upgrade: Vec<(u64, u64, u64)>,
    /// Closes seen before the first upgrade's request.
    pub closes_before: u64,
    /// How the processes the run started ended, if anything was off.
    pub notes: Vec<String>,
}

impl UpgradeRun {
    /// Every upgrade answered 200 with a new process of the same binary,
    /// every old process gone, and the sessions' checks passed (no close).
    pub fn passed(&self) -> bool {
        self.sessions.passed()
            && self.upgrades.iter().all(|u| u.ok && u.same_binary && u.gone_s.is_some())
            && self.closes_before == 0
    }

    /// Closes the sessions saw per upgrade (the mean over the upgrades done).
    pub fn closes_per_upgrade(&self) -> f64 {
        let total: u64 = self.closes_per_upgrade.iter().map(|(a, b, c)| a + b + c).sum();
        total as f64 / self.upgrades.iter().filter(|u| u.ok).count().max(1) as f64
    }

    /// Medians over the upgrades that answered 200: ms from the request to
    /// the old process gone, the answer's `took_ms` and `frozen_ms`.
    pub fn medians_ms(&self) -> (f64, f64, f64) {
        let done: Vec<&Upgrade> = self.upgrades.iter().filter(|u| u.ok).collect();
        let of = |f: fn(&Upgrade) -> f64| median(&done.iter().map(|u| f(u)).collect::<Vec<_>>());
        (
            of(|u| u.gone_s.map_or(f64::NAN, |gone| (gone - u.start_s) * 1e3)),
            of(|u| u.took_ms),
            of(|u| u.frozen_ms),
        )
    }
}

pub fn run(options: &Options) -> UpgradeRun {
    let mut server = Server::start(&options.daemon, None);
    let addr = server.daemon.public();
    let load = options.rooms_load(true);
    let (start_tx, start_rx) = std::sync::mpsc::channel::<Instant>();
    let (upgrades, results) = std::thread::scope(|scope| {
        let server = &server;
        // Each upgrade at its time, or once the one before is over (its
        // old process gone), whichever is later.
        let upgrader = scope.spawn(move || {
            let Ok(start) = start_rx.recv() else { return Vec::new() };
            (0..options.upgrades)
                .map(|n| {
                    let when = start + options.first_upgrade + options.upgrade_every * n as u32;
                    if let Some(wait) = when.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    server.upgrade(start)
                })
                .collect::<Vec<_>>()
        });
        let ready = || {
            if !server.wait_open(options.sessions as u64) {
                eprintln!("not every session counted open within 30 s: {}", server.sessions_status());
            }
        };
        let results = clients::run(addr, &load, ready, |start| {
            let _ = start_tx.send(start);
        });
        (upgrader.join().expect("the upgrade thread"), results)
    });
    let mut run = UpgradeRun { notes: server.taken_over(&upgrades), ..UpgradeRun::default() };
    // The serving process's counts (an old process's closes left with it).
    let status = server.sessions_status();
    run.sessions.closes = status["closes"].clone();
    run.sessions.pushes_dropped = status["pushes_dropped"].clone();
    let windows: Vec<(f64, f64)> = upgrades.iter().map(|u| (u.start_s, u.end_s)).collect();
    tally(&mut run.sessions, &results, &windows, options);
    count_closes(&mut run, &results, &upgrades);
    print_sessions_ended(&results);
    run.upgrades = upgrades;
    run
}

/// Puts every close a session saw under the upgrade whose request it
/// followed (the last one before it).
pub fn count_closes(run: &mut UpgradeRun, results: &[SessionResult], upgrades: &[Upgrade]) {
    run.closes_per_upgrade = vec![(0, 0, 0); upgrades.len()];
    for close in results.iter().flat_map(|r| &r.closes) {
        let Some(n) = upgrades.iter().rposition(|u| u.start_s <= close.at_s) else {
            run.closes_before += 1;
            continue;
        };
        let counts = &mut run.closes_per_upgrade[n];
        match close.code {
            Some(1001) => counts.0 += 1,
            Some(_) => counts.1 += 1,
            None => counts.2 += 1,
        }
    }
}

pub fn print(run: &UpgradeRun, options: &Options) {
    let sessions = &run.sessions;
    println!(
        "  {}: closes seen {} ({:.1} per upgrade, {} before the first), {} reconnects ({} attempts refused and tried again), {} sessions ended early, {} joins failed; {} sent",
        if run.passed() { "PASS" } else { "FAIL" },
        sessions.closes_seen_text(),
        run.closes_per_upgrade(),
        run.closes_before,
        sessions.reconnects,
        sessions.rejoins_refused,
        sessions.closed,
        sessions.join_failed,
        sessions.sent
    );
    println!(
        "  acks: {} lost, {} unanswered at a close, {} out of order, {} extra; broadcasts: {} expected, {} lost, {} lost with their sender's close, {} missed while their receiver was away, {} repeated or reordered",
        sessions.acks_lost,
        sessions.acks_unanswered_at_close,
        sessions.acks_out_of_order,
        sessions.acks_extra,
        sessions.broadcasts_expected,
        sessions.broadcasts_lost,
        sessions.broadcasts_lost_with_close,
        sessions.broadcasts_missed_while_away,
        sessions.broadcasts_repeated_or_reordered
    );
    println!("{}", sessions.rate_line(options));
    println!("  round trip (send -> own ack), steady: {}", round_trips_text(sessions.steady));
    println!("  round trip, during upgrades:        {}", round_trips_text(sessions.swapping));
    if sessions.reconnects > 0 {
        // Messages are not sent while away: the round trips above miss that pause.
        let (p50, p99, max, _) = sessions.away;
        println!(
            "  closed sessions away (close -> joined again): p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"
        );
    }
    for (n, (upgrade, closes)) in run.upgrades.iter().zip(&run.closes_per_upgrade).enumerate() {
        if !upgrade.ok {
            println!("  upgrade {} at {:.2} s FAILED: {}", n + 1, upgrade.start_s, upgrade.detail);
            continue;
        }
        let gone = upgrade.gone_s.map_or("STILL RUNNING 30 s after the answer".into(), |gone| {
            format!("gone {:.0} ms after the request", (gone - upgrade.start_s) * 1e3)
        });
        println!(
            "  upgrade {} at {:.2} s: pid {} -> {}{}, answered in {:.0} ms (took_ms {:.0}, frozen_ms {}); old process {gone}; closes seen: {} with 1001, {} other, {} dropped",
            n + 1,
            upgrade.start_s,
            upgrade.old_pid,
            upgrade.new_pid,
            if upgrade.same_binary { "" } else { " (NOT THE SAME BINARY)" },
            (upgrade.end_s - upgrade.start_s) * 1e3,
            upgrade.took_ms,
            ms_text(upgrade.frozen_ms),
            closes.0,
            closes.1,
            closes.2
        );
    }
    let (gone, took, frozen) = run.medians_ms();
    // nginx has no status to ask (and freezes nothing).
    let serving = if sessions.closes.is_null() {
        String::new()
    } else {
        format!("; serving process: closes {}, pushes_dropped {}", sessions.closes, sessions.pushes_dropped)
    };
    println!(
        "  upgrades: {}/{} done, medians: old process gone {gone:.0} ms after the request, took_ms {took:.0}, frozen_ms {}{serving}",
        run.upgrades.iter().filter(|u| u.ok).count(),
        options.upgrades,
        ms_text(frozen)
    );
    for note in &run.notes {
        println!("  {note}");
    }
}

/// Milliseconds, or `-` for none (NaN).
pub fn ms_text(ms: f64) -> String {
    if ms.is_nan() { "-".into() } else { format!("{ms:.0}") }
}
