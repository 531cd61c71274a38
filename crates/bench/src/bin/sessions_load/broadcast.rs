//! Part 1 (and 3): sessions in rooms sending at a fixed rate, every message
//! acked to its sender and broadcast to its room, while the module is
//! swapped; and the daemon's resident memory with no session and with all
//! of them joined and idle, before the load starts.

use std::time::Duration;

use crate::Options;
use crate::clients;
use crate::plain::PlainServer;
use crate::server::{Server, cpu_during, median};
pub use crate::tally::BroadcastRun;
use crate::tally::{print_sessions_ended, round_trips_text, tally};

/// Against the daemon (with the swaps), or with `plain` against
/// `room-server` (no hotswap, no swaps).
pub fn run(options: &Options, plain: bool) -> BroadcastRun {
    if plain {
        return run_plain(options);
    }
    let server = Server::start(&options.daemon, None);
    let addr = server.daemon.public();
    let load = options.rooms_load(false);
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
    let windows: Vec<(f64, f64)> = swaps.iter().map(|s| (s.start_s, s.end_s)).collect();
    tally(&mut run, &results, &windows, options);
    run.swaps_ok = swaps.iter().filter(|s| s.ok).count();
    let took: Vec<f64> = swaps.iter().map(|s| (s.end_s - s.start_s) * 1e3).collect();
    run.swap_ms_median = median(&took);
    print_sessions_ended(&results);
    for swap in swaps.iter().filter(|s| !s.ok) {
        println!("  swap at {:.2} s failed: {}", swap.start_s, swap.detail);
    }
    run
}

fn run_plain(options: &Options) -> BroadcastRun {
    let server = PlainServer::start();
    let load = options.rooms_load(false);
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
    print_sessions_ended(&results);
    run
}

pub fn print(run: &BroadcastRun, options: &Options) {
    println!(
        "  {}: {} sessions closed, {} joins failed; {} sent; acks: {} lost, {} unanswered at a close, {} out of order, {} extra; broadcasts: {} expected, {} lost, {} repeated or reordered",
        if run.passed() { "PASS" } else { "FAIL" },
        run.closed,
        run.join_failed,
        run.sent,
        run.acks_lost,
        run.acks_unanswered_at_close,
        run.acks_out_of_order,
        run.acks_extra,
        run.broadcasts_expected,
        run.broadcasts_lost,
        run.broadcasts_repeated_or_reordered
    );
    println!("{}", run.rate_line(options));
    let seconds = options.duration.as_secs_f64();
    println!(
        "  server CPU during the load: {:.1} s of {:.0} s ({:.2} cores), {:.1} µs per message acked",
        run.server_cpu_s,
        seconds,
        run.server_cpu_s / seconds,
        run.server_cpu_us_per_message()
    );
    println!("  round trip (send -> own ack), steady: {}", round_trips_text(run.steady));
    println!("  round trip, during swaps:           {}", round_trips_text(run.swapping));
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
