//! Part 2: one idle session in each of many rooms, the socket ticking every
//! `--tick`, while the module is swapped. The daemon's tick lateness is
//! sampled from its status during the run; at the end, with every session
//! closed (no more ticks), the ticks the rooms counted must equal the ticks
//! the daemon says ran, and ran + skipped is set against the nominal count.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::Options;
use crate::clients::{self, Load};
use crate::server::{Server, Swap, median};

#[derive(Debug, Default)]
pub struct TickRun {
    pub closed: usize,
    pub ran: u64,
    pub skipped: u64,
    pub failed: u64,
    pub counted_by_rooms: u64,
    pub room_errors: usize,
    /// Rooms x ticks per second x the seconds the load ran (every session
    /// open), and x the seconds from the first join to the last close.
    pub nominal: (f64, f64),
    /// (p50, p99) lateness samples from the status, steady and during swaps.
    pub steady: Vec<(f64, f64)>,
    pub swapping: Vec<(f64, f64)>,
    /// Ticks skipped between two status samples, by whether a swap was near
    /// (the interval overlaps a swap's window) or not.
    pub skipped_near_swaps: u64,
    pub skipped_away_from_swaps: u64,
    pub swaps_ok: usize,
}

impl TickRun {
    /// No tick missed or doubled: the rooms counted exactly the ticks that ran.
    pub fn passed(&self) -> bool {
        self.closed == 0 && self.room_errors == 0 && self.failed == 0 && self.counted_by_rooms == self.ran
    }
}

pub fn run(options: &Options) -> TickRun {
    let tick = format!("{}ms", options.tick.as_millis());
    let server = Server::start(&options.daemon, Some(&tick));
    let addr = server.daemon.public();
    let load = Load {
        sessions: options.tick_rooms,
        rooms: options.tick_rooms,
        rate_hz: 0.0,
        duration: options.duration,
        reconnect: false,
    };
    let mut run = TickRun::default();
    let (start_tx, start_rx) = std::sync::mpsc::channel::<Instant>();
    let sampling = AtomicBool::new(true);
    let (swaps, samples, results, span) = std::thread::scope(|scope| {
        let (swap_start_tx, swap_start_rx) = std::sync::mpsc::channel::<Instant>();
        let server = &server;
        let swapper = scope.spawn(move || {
            let Ok(start) = swap_start_rx.recv() else { return Vec::new() };
            server.swaps(options.swaps, options.first_swap, options.swap_every, start)
        });
        let sampling = &sampling;
        let sampler = scope.spawn(move || {
            let Ok(start) = start_rx.recv() else { return Vec::new() };
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let ticks = &server.sessions_status()["ticks"];
                let (p50, p99) = (ticks["late_p50_ms"].as_f64(), ticks["late_p99_ms"].as_f64());
                let skipped = ticks["skipped"].as_u64().unwrap_or(0);
                if let (Some(p50), Some(p99)) = (p50, p99) {
                    samples.push((start.elapsed().as_secs_f64(), p50, p99, skipped));
                }
            }
            samples
        });
        let ready = || {
            if !server.wait_open(options.tick_rooms as u64) {
                eprintln!("not every session counted open within 30 s: {}", server.sessions_status());
            }
        };
        let began = Instant::now();
        let results = clients::run(addr, &load, ready, |start| {
            let _ = start_tx.send(start);
            let _ = swap_start_tx.send(start);
        });
        // The sessions were open from their joins (ticks start then) to their close.
        if !server.wait_open(0) {
            eprintln!("sessions still open 30 s after the clients closed: {}", server.sessions_status());
        }
        sampling.store(false, Ordering::Relaxed);
        let span = began.elapsed();
        (swapper.join().expect("the swap thread"), sampler.join().expect("the sampler"), results, span)
    });
    // A tick that started just before the last close may still be running.
    std::thread::sleep(Duration::from_millis(300));
    let ticks = server.sessions_status()["ticks"].clone();
    run.ran = ticks["ran"].as_u64().unwrap_or(0);
    run.skipped = ticks["skipped"].as_u64().unwrap_or(0);
    run.failed = ticks["failed"].as_u64().unwrap_or(0);
    run.closed = results.iter().filter(|r| r.closed_early.is_some() || r.join_failed.is_some()).count();
    for room in 0..options.tick_rooms {
        let (code, body) = server.daemon.http("POST", &format!("/call/room/ticks?instance=room-{room}"), b"");
        match String::from_utf8_lossy(&body).trim().parse::<u64>() {
            Ok(n) if code == 200 => run.counted_by_rooms += n,
            _ => run.room_errors += 1,
        }
    }
    let per_room =
        |time: Duration| options.tick_rooms as f64 * time.as_secs_f64() / options.tick.as_secs_f64();
    run.nominal = (per_room(options.duration), per_room(span));
    let mut previous: Option<(f64, u64)> = None;
    for &(at, _, _, skipped) in &samples {
        if let Some((before, skipped_before)) = previous {
            let new = skipped.saturating_sub(skipped_before);
            let overlaps = swaps.iter().any(|s| s.end_s + 0.3 >= before && s.start_s - 0.05 <= at);
            if overlaps {
                run.skipped_near_swaps += new;
            } else {
                run.skipped_away_from_swaps += new;
            }
        }
        previous = Some((at, skipped));
    }
    for (at, p50, p99, _) in samples {
        if near_swap(at, &swaps) {
            run.swapping.push((p50, p99));
        } else if at > 1.0 {
            run.steady.push((p50, p99));
        }
    }
    run.swaps_ok = swaps.iter().filter(|s| s.ok).count();
    run
}

/// Whether a status sampled at `at` covers ticks near a swap (its window,
/// the last 1024 ticks, spans well under 0.3 s at this load).
fn near_swap(at: f64, swaps: &[Swap]) -> bool {
    swaps.iter().any(|s| at >= s.start_s - 0.05 && at <= s.end_s + 0.3)
}

pub fn print(run: &TickRun, options: &Options) {
    let sampled = |samples: &[(f64, f64)]| {
        let p50: Vec<f64> = samples.iter().map(|s| s.0).collect();
        let p99: Vec<f64> = samples.iter().map(|s| s.1).collect();
        format!(
            "p50 {:.2} ms, p99 {:.2} ms (medians of {} status samples; worst p99 {:.1} ms)",
            median(&p50),
            median(&p99),
            samples.len(),
            p99.iter().copied().fold(f64::NAN, f64::max)
        )
    };
    println!(
        "  {}: ticks counted by the rooms {} vs ran {} (daemon); skipped {}, failed {}; {} sessions closed early, {} room calls failed",
        if run.passed() { "PASS" } else { "FAIL" },
        run.counted_by_rooms,
        run.ran,
        run.skipped,
        run.failed,
        run.closed,
        run.room_errors
    );
    println!(
        "  ran + skipped = {} against {:.0} nominal with every session open ({} rooms x {:?} / {:?}) and {:.0} from the first join to the last close",
        run.ran + run.skipped,
        run.nominal.0,
        options.tick_rooms,
        options.duration,
        options.tick,
        run.nominal.1
    );
    println!(
        "  skipped from the load's start to the last close, per 250 ms status interval: {} in intervals with a swap, {} in the others",
        run.skipped_near_swaps, run.skipped_away_from_swaps
    );
    println!("  tick lateness, steady:       {}", sampled(&run.steady));
    println!("  tick lateness, during swaps: {}", sampled(&run.swapping));
    println!("  swaps: {}/{} answered 200", run.swaps_ok, options.swaps);
}
