//! The figures of a run of sessions sending in rooms (`broadcast`, `plain`,
//! `upgrades`): every session's acks and broadcasts checked against what
//! each sender sent, closes counted, round trips split into steady and
//! during the server's events (swaps or upgrades).

use std::collections::{HashMap, HashSet};

use crate::Options;
use crate::clients::SessionResult;
use crate::server::percentiles;

/// The figures of one run.
#[derive(Debug, Default)]
pub struct BroadcastRun {
    pub join_failed: usize,
    /// Sessions that ended before the stop (a close they did not come back from).
    pub closed: usize,
    /// Close frames and dropped connections the sessions saw, by code
    /// (`None`: dropped without a close frame).
    pub closes_seen: HashMap<Option<u16>, u64>,
    /// Times a session joined its room again after a close.
    pub reconnects: u64,
    /// Attempts to join again that failed (and were tried again).
    pub rejoins_refused: u64,
    /// From a close to joined again (ms): p50, p99, max, count.
    pub away: (f64, f64, f64, usize),
    pub sent: u64,
    /// Acks that came back before the stop (the rate the server kept up with).
    pub acked_before_stop: u64,
    /// The longest time from the stop until a session had all its acks (s).
    pub drain_max_s: f64,
    /// Sessions still missing acks when they gave up (DRAIN after the stop).
    pub undrained: usize,
    pub acks_lost: u64,
    /// Messages still waiting for their ack when their session was closed.
    pub acks_unanswered_at_close: u64,
    pub acks_out_of_order: u64,
    pub acks_extra: u64,
    pub broadcasts_expected: u64,
    pub broadcasts_lost: u64,
    /// Broadcasts of messages unanswered at their sender's close that its
    /// room never got (lost with the close, not counted in `broadcasts_lost`).
    pub broadcasts_lost_with_close: u64,
    /// Broadcasts sent while their receiver was away (closed, joining again).
    pub broadcasts_missed_while_away: u64,
    pub broadcasts_repeated_or_reordered: u64,
    pub steady: (f64, f64, f64, usize),
    /// During the server's events (`swaps`/`upgrades`).
    pub swapping: (f64, f64, f64, usize),
    pub swaps_ok: usize,
    pub swap_ms_median: f64,
    pub rss_idle_kib: u64,
    pub rss_sessions_kib: u64,
    pub closes: serde_json::Value,
    pub queue_depth_max: serde_json::Value,
    pub pushes_dropped: serde_json::Value,
    /// Before the clients closed.
    pub pushes_dropped_at_stop: serde_json::Value,
    /// Pushes to sessions already closing (the room's `left N` broadcasts
    /// racing the closes at the end).
    pub pushes_after_close: serde_json::Value,
    /// CPU time the server used during the load window, in seconds.
    pub server_cpu_s: f64,
}

impl BroadcastRun {
    /// Whether nothing was lost, repeated, reordered or closed.
    pub fn passed(&self) -> bool {
        self.join_failed == 0
            && self.closed == 0
            && self.closes_seen.is_empty()
            && self.acks_lost == 0
            && self.acks_unanswered_at_close == 0
            && self.acks_out_of_order == 0
            && self.acks_extra == 0
            && self.broadcasts_lost == 0
            && self.broadcasts_lost_with_close == 0
            && self.broadcasts_repeated_or_reordered == 0
    }

    /// The server's CPU time per message acked before the stop, in µs.
    pub fn server_cpu_us_per_message(&self) -> f64 {
        self.server_cpu_s * 1e6 / self.acked_before_stop.max(1) as f64
    }

    pub fn rss_per_session_kib(&self, sessions: usize) -> f64 {
        (self.rss_sessions_kib as f64 - self.rss_idle_kib as f64) / sessions.max(1) as f64
    }

    /// What the clients sent and got acked per second, and how long the
    /// last acks took after the stop.
    pub fn rate_line(&self, options: &Options) -> String {
        let seconds = options.duration.as_secs_f64();
        format!(
            "  rate: {:.0} messages/s sent (nominal {:.0}), {:.0}/s acked before the stop; all acks back {:.1} s after the stop at the latest ({} sessions gave up after {:?})",
            self.sent as f64 / seconds,
            options.sessions as f64 * options.rate_hz,
            self.acked_before_stop as f64 / seconds,
            self.drain_max_s,
            self.undrained,
            crate::clients::DRAIN
        )
    }

    /// "N (code C), M (dropped)" of the closes the sessions saw.
    pub fn closes_seen_text(&self) -> String {
        let mut codes: Vec<_> = self.closes_seen.iter().collect();
        codes.sort();
        let text: Vec<String> = codes
            .iter()
            .map(|(code, n)| match code {
                Some(code) => format!("{n} with {code}"),
                None => format!("{n} dropped"),
            })
            .collect();
        if text.is_empty() { "none".into() } else { text.join(", ") }
    }
}

/// Checks every session's acks and broadcasts against what each sender sent,
/// and splits the round trips into steady and during `events` (each from
/// its request to its answer, seconds from the load's start).
pub fn tally(run: &mut BroadcastRun, results: &[SessionResult], events: &[(f64, f64)], options: &Options) {
    let sent: HashMap<usize, u64> = results.iter().map(|r| (r.client, r.sent)).collect();
    let unanswered: HashMap<usize, HashSet<u64>> =
        results.iter().map(|r| (r.client, r.unacked_at_close.iter().copied().collect())).collect();
    let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
    for result in results.iter().filter(|r| r.join_failed.is_none()) {
        members.entry(result.room).or_default().push(result.client);
    }
    // SEQs first..=last of `sender` that a receiver never got: lost with
    // the sender's close if its message was unanswered then, else lost.
    let missing = |run: &mut BroadcastRun, sender: usize, first: u64, last: u64| {
        let with_close = (first..=last).filter(|seq| unanswered[&sender].contains(seq)).count() as u64;
        run.broadcasts_lost_with_close += with_close;
        run.broadcasts_lost += (last + 1).saturating_sub(first) - with_close;
    };
    let (mut steady, mut during, mut away) = (Vec::new(), Vec::new(), Vec::new());
    let duration = options.duration.as_secs_f64();
    for result in results {
        run.join_failed += usize::from(result.join_failed.is_some());
        run.closed += usize::from(result.closed_early.is_some());
        for close in &result.closes {
            *run.closes_seen.entry(close.code).or_default() += 1;
        }
        run.reconnects += result.reconnects;
        run.rejoins_refused += result.rejoins_refused;
        away.extend_from_slice(&result.away_ms);
        run.sent += result.sent;
        run.acked_before_stop +=
            result.round_trips.iter().filter(|(at, rtt)| at + rtt / 1e3 <= duration).count() as u64;
        match result.drained_after_s {
            Some(after) => run.drain_max_s = run.drain_max_s.max(after),
            None => run.undrained += usize::from(result.join_failed.is_none()),
        }
        let unanswered_here = result.unacked_at_close.len() as u64;
        run.acks_unanswered_at_close += unanswered_here;
        run.acks_lost += result.sent.saturating_sub(result.acks + result.acks_extra + unanswered_here);
        run.acks_out_of_order += result.acks_out_of_order;
        run.acks_extra += result.acks_extra;
        run.broadcasts_repeated_or_reordered += result.repeated_or_reordered;
        run.broadcasts_missed_while_away += result.missed_while_away;
        for gap in &result.gaps {
            missing(run, gap.sender, gap.first, gap.last);
        }
        if result.join_failed.is_some() {
            continue;
        }
        for &sender in &members[&result.room] {
            let expected = sent[&sender];
            run.broadcasts_expected += expected;
            let heard = result.next_from.get(&sender).map_or(0, |next| next - 1);
            if expected > heard {
                missing(run, sender, heard + 1, expected);
            }
        }
        for &(at, rtt) in &result.round_trips {
            let near =
                |margin: f64| events.iter().any(|&(start, end)| at >= start - margin && at <= end + margin);
            if near(0.05) || events.iter().any(|&(start, end)| at >= start && at <= end + 0.5) {
                during.push(rtt);
            } else if at > 1.0 && at < duration && !near(1.5) {
                steady.push(rtt);
            }
        }
    }
    run.steady = percentiles(&mut steady);
    run.swapping = percentiles(&mut during);
    run.away = percentiles(&mut away);
}

/// Round-trip order statistics as text.
pub fn round_trips_text((p50, p99, max, n): (f64, f64, f64, usize)) -> String {
    format!("p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.1} ms ({n} messages)")
}

/// The first few sessions that could not join or ended early, and why.
pub fn print_sessions_ended(results: &[SessionResult]) {
    for result in results.iter().filter(|r| r.closed_early.is_some() || r.join_failed.is_some()).take(5) {
        println!(
            "  session {} (room {}): {:?} {:?}",
            result.client, result.room, result.join_failed, result.closed_early
        );
    }
}
