//! Runs many calls of one kind, for counting the instructions of one call
//! under callgrind: instruction counts repeat exactly from run to run, on a
//! loaded machine too, where nanoseconds do not.
//!
//! ```sh
//! cargo build --release -p hotswap-bench --bin call-instructions
//! valgrind --tool=callgrind --toggle-collect='call_instructions::calls*' \
//!     --callgrind-out-file=engine.out target/release/call-instructions engine 100000
//! callgrind_annotate --inclusive=yes engine.out | head -40
//! ```
//!
//! `KIND` is `engine` (`Engine::call` by name), `keys` (the same on 1,000
//! instances in turn) or `handle` (`InstanceHandle::call`); the total
//! divided by `COUNT` is one call.

use std::hint::black_box;

use hotswap::{Engine, EngineConfig, InstanceHandle};

/// `count` calls through the engine, looked up by name each time.
#[inline(never)]
fn calls_by_name(engine: &Engine, count: u64) {
    for _ in 0..count {
        let reply = engine.call(black_box("counter"), black_box("k"), black_box("noop"), black_box(b""));
        black_box(reply).expect("noop succeeds");
    }
}

/// `count` calls through the engine on `keys` in turn: each call names
/// another instance than its thread called last.
#[inline(never)]
fn calls_on_many_keys(engine: &Engine, keys: &[String], count: u64) {
    for call in 0..count {
        let key = &keys[(call % keys.len() as u64) as usize];
        let reply = engine.call(black_box("counter"), black_box(key), black_box("noop"), black_box(b""));
        black_box(reply).expect("noop succeeds");
    }
}

/// `count` calls through a handle.
#[inline(never)]
fn calls_by_handle(handle: &InstanceHandle, count: u64) {
    for _ in 0..count {
        black_box(handle.call(black_box("noop"), black_box(b""))).expect("noop succeeds");
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: call-instructions engine|keys|handle COUNT";
    let kind = args.next().expect(usage);
    let count: u64 = args.next().and_then(|count| count.parse().ok()).expect(usage);

    let engine = Engine::new(EngineConfig::default());
    engine.load("counter", hotswap_test_modules::COUNTER_V1).expect("load counter v1");
    engine.call("counter", "k", "noop", b"").expect("start instance k");
    let handle = engine.instance("counter", "k").expect("a handle on instance k");
    match kind.as_str() {
        "engine" => calls_by_name(&engine, count),
        "keys" => {
            let keys: Vec<String> = (0..1000).map(|n| format!("room-{n}")).collect();
            for key in &keys {
                engine.call("counter", key, "noop", b"").expect("start an instance");
            }
            calls_on_many_keys(&engine, &keys, count)
        }
        "handle" => calls_by_handle(&handle, count),
        _ => panic!("{usage}"),
    }
}
