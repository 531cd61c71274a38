//! Part 1 (and 3): sessions in rooms sending at a fixed rate, every message
//! acked to its sender and broadcast to its room, while the module is
//! swapped; and the daemon's resident memory with no session and with all
//! of them joined and idle, before the load starts.

use std::collections::HashMap;
use std::time::Duration;

use crate::Options;
use crate::clients::{self, Load, SessionResult};
use crate::plain::PlainServer;
use crate::server::{Server, Swap, cpu_during, median, percentiles};

/// The figures of one run.
#[derive(Debug, Default)]
pub struct BroadcastRun {
    pub join_failed: usize,
    pub closed: usize,
    pub sent: u64,
    /// Acks that came back before the stop (the rate the server kept up with).
    pub acked_before_stop: u64,
    /// The longest time from the stop until a session had all its acks (s).
    pub drain_max_s: f64,
    /// Sessions still missing acks when they gave up (DRAIN after the stop).
    pub undrained: usize,
    pub acks_lost: u64,
    pub acks_out_of_order: u64,
    pub acks_extra: u64,
    pub broadcasts_expected: u64,
    pub broadcasts_lost: u64,
    pub broadcasts_repeated_or_reordered: u64,
    pub steady: (f64, f64, f64, usize),
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
            && self.acks_lost == 0
            && self.acks_out_of_order == 0
            && self.acks_extra == 0
            && self.broadcasts_lost == 0
            && self.broadcasts_repeated_or_reordered == 0
    }

    /// The server's CPU time per message acked before the stop, in µs.
    pub fn server_cpu_us_per_message(&self) -> f64 {
        self.server_cpu_s * 1e6 / self.acked_before_stop.max(1) as f64
    }

    pub fn rss_per_session_kib(&self, sessions: usize) -> f64 {
        (self.rss_sessions_kib as f64 - self.rss_idle_kib as f64) / sessions.max(1) as f64
    }
}

/// Against the daemon (with the swaps), or with `plain` against
/// `room-server` (no hotswap, no swaps).
pub fn run(options: &Options, plain: bool) -> BroadcastRun {
    if plain {
        return run_plain(options);
    }
    let server = Server::start(&options.daemon, None);
    let addr = server.daemon.public();
    let load = Load {
        sessions: options.sessions,
        rooms: options.rooms,
        rate_hz: options.rate_hz,
        duration: options.duration,
    };
    let mut run = BroadcastRun { rss_idle_kib: server.rss_kib(), ..BroadcastRun::default() };
    let (start_tx, start_rx) = std::sync::mpsc::channel();
    let ((swaps, at_stop), results) = std::thread::scope(|scope| {
        let server = &server;
        let swapper = scope.spawn(move || {
            let Ok(start) = start_rx.recv() else { return (Vec::new(), serde_json::Value::Null) };
            let swaps = server.swaps(options.swaps, options.first_swap, options.swap_every, start);
            // The counts just after the stop, before the clients close.
            let at_stop = start + options.duration + Duration::from_millis(300);
            if let Some(wait) = at_stop.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(wait);
            }
            (swaps, server.sessions_status())
        });
        let ready = || {
            if !server.wait_open(options.sessions as u64) {
                eprintln!("not every session counted open within 30 s: {}", server.sessions_status());
            }
            std::thread::sleep(Duration::from_millis(500));
            run.rss_sessions_kib = server.rss_kib();
        };
        let mut cpu = None;
        let results = clients::run(addr, &load, ready, |start| {
            cpu = Some(cpu_during(server.daemon.pid(), start, options.duration));
            let _ = start_tx.send(start);
        });
        run.server_cpu_s = cpu.map_or(0.0, |cpu| cpu.join().expect("the CPU thread"));
        (swapper.join().expect("the swap thread"), results)
    });
    let status = server.sessions_status();
    run.closes = status["closes"].clone();
    run.queue_depth_max = status["queue_depth_max"].clone();
    run.pushes_dropped = status["pushes_dropped"].clone();
    run.pushes_dropped_at_stop = at_stop["pushes_dropped"].clone();
    run.pushes_after_close = status["pushes_after_close"].clone();
    tally(&mut run, &results, &swaps, options);
    for result in results.iter().filter(|r| r.closed_early.is_some() || r.join_failed.is_some()).take(5) {
        println!(
            "  session {} (room {}): {:?} {:?}",
            result.client, result.room, result.join_failed, result.closed_early
        );
    }
    for swap in swaps.iter().filter(|s| !s.ok) {
        println!("  swap at {:.2} s failed: {}", swap.start_s, swap.detail);
    }
    run
}

fn run_plain(options: &Options) -> BroadcastRun {
    let server = PlainServer::start();
    let load = Load {
        sessions: options.sessions,
        rooms: options.rooms,
        rate_hz: options.rate_hz,
        duration: options.duration,
    };
    let mut run = BroadcastRun { rss_idle_kib: server.rss_kib(), ..BroadcastRun::default() };
    let ready = || {
        // No status to ask: every handshake is done; give the joins a moment.
        std::thread::sleep(Duration::from_millis(1000));
        run.rss_sessions_kib = server.rss_kib();
    };
    let mut cpu = None;
    let results = clients::run(server.addr, &load, ready, |start| {
        cpu = Some(cpu_during(server.pid(), start, options.duration));
    });
    run.server_cpu_s = cpu.map_or(0.0, |cpu| cpu.join().expect("the CPU thread"));
    tally(&mut run, &results, &[], options);
    for result in results.iter().filter(|r| r.closed_early.is_some() || r.join_failed.is_some()).take(5) {
        println!(
            "  session {} (room {}): {:?} {:?}",
            result.client, result.room, result.join_failed, result.closed_early
        );
    }
    run
}

/// Checks every session's acks and broadcasts against what each sender sent,
/// and splits the round trips into steady and swapping windows.
fn tally(run: &mut BroadcastRun, results: &[SessionResult], swaps: &[Swap], options: &Options) {
    let sent: HashMap<usize, u64> = results.iter().map(|r| (r.client, r.sent)).collect();
    let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
    for result in results.iter().filter(|r| r.join_failed.is_none()) {
        members.entry(result.room).or_default().push(result.client);
    }
    let (mut steady, mut swapping) = (Vec::new(), Vec::new());
    let duration = options.duration.as_secs_f64();
    for result in results {
        run.join_failed += usize::from(result.join_failed.is_some());
        run.closed += usize::from(result.closed_early.is_some());
        run.sent += result.sent;
        run.acked_before_stop +=
            result.round_trips.iter().filter(|(at, rtt)| at + rtt / 1e3 <= duration).count() as u64;
        match result.drained_after_s {
            Some(after) => run.drain_max_s = run.drain_max_s.max(after),
            None => run.undrained += usize::from(result.join_failed.is_none()),
        }
        run.acks_lost += result.sent.saturating_sub(result.acks + result.acks_extra);
        run.acks_out_of_order += result.acks_out_of_order;
        run.acks_extra += result.acks_extra;
        run.broadcasts_repeated_or_reordered += result.repeated_or_reordered;
        run.broadcasts_lost += result.gaps;
        if result.join_failed.is_some() {
            continue;
        }
        for sender in &members[&result.room] {
            let expected = sent[sender];
            run.broadcasts_expected += expected;
            let heard = result.next_from.get(sender).map_or(0, |next| next - 1);
            run.broadcasts_lost += expected.saturating_sub(heard);
        }
        for &(at, rtt) in &result.round_trips {
            let near = |margin: f64| swaps.iter().any(|s| at >= s.start_s - margin && at <= s.end_s + margin);
            if near(0.05) || swaps.iter().any(|s| at >= s.start_s && at <= s.end_s + 0.5) {
                swapping.push(rtt);
            } else if at > 1.0 && at < duration && !near(1.5) {
                steady.push(rtt);
            }
        }
    }
    run.steady = percentiles(&mut steady);
    run.swapping = percentiles(&mut swapping);
    run.swaps_ok = swaps.iter().filter(|s| s.ok).count();
    let took: Vec<f64> = swaps.iter().map(|s| (s.end_s - s.start_s) * 1e3).collect();
    run.swap_ms_median = median(&took);
}

pub fn print(run: &BroadcastRun, options: &Options) {
    let ms = |(p50, p99, max, n): (f64, f64, f64, usize)| {
        format!("p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.1} ms ({n} messages)")
    };
    println!(
        "  {}: {} sessions closed, {} joins failed; {} sent; acks: {} lost, {} out of order, {} extra; broadcasts: {} expected, {} lost, {} repeated or reordered",
        if run.passed() { "PASS" } else { "FAIL" },
        run.closed,
        run.join_failed,
        run.sent,
        run.acks_lost,
        run.acks_out_of_order,
        run.acks_extra,
        run.broadcasts_expected,
        run.broadcasts_lost,
        run.broadcasts_repeated_or_reordered
    );
    let seconds = options.duration.as_secs_f64();
    println!(
        "  rate: {:.0} messages/s sent (nominal {:.0}), {:.0}/s acked before the stop; all acks back {:.1} s after the stop at the latest ({} sessions gave up after {:?})",
        run.sent as f64 / seconds,
        options.sessions as f64 * options.rate_hz,
        run.acked_before_stop as f64 / seconds,
        run.drain_max_s,
        run.undrained,
        crate::clients::DRAIN
    );
    println!(
        "  server CPU during the load: {:.1} s of {:.0} s ({:.2} cores), {:.1} µs per message acked",
        run.server_cpu_s,
        seconds,
        run.server_cpu_s / seconds,
        run.server_cpu_us_per_message()
    );
    println!("  round trip (send -> own ack), steady: {}", ms(run.steady));
    println!("  round trip, during swaps:           {}", ms(run.swapping));
    // The plain server has no swaps and no status.
    if !run.closes.is_null() {
        println!(
            "  swaps: {}/{} answered 200, median {:.1} ms each; daemon: closes {}, queue_depth_max {}, pushes_dropped {} at the stop, {} at the end, {} to closing sessions",
            run.swaps_ok,
            options.swaps,
            run.swap_ms_median,
            run.closes,
            run.queue_depth_max,
            run.pushes_dropped_at_stop,
            run.pushes_dropped,
            run.pushes_after_close
        );
    }
    println!(
        "  memory: RSS {} KiB with no session, {} KiB with {} idle sessions in {} rooms: {:.1} KiB per session",
        run.rss_idle_kib,
        run.rss_sessions_kib,
        options.sessions,
        options.rooms,
        run.rss_per_session_kib(options.sessions)
    );
}
