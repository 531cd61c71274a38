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
//! instances in turn), `handle` (`InstanceHandle::call` of counter's
//! `noop`), `handle-add` (counter's `add` with `1` through a handle),
//! `typed-balance` or `typed-deposit` (the typed `ledger` v1's
//! `balance`, and `deposit` with the JSON argument `1`, through a handle);
//! the total divided by `COUNT` is one call.

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

/// `count` calls of `method` with `payload` through a handle.
#[inline(never)]
fn calls_by_handle(handle: &InstanceHandle, method: &str, payload: &[u8], count: u64) {
    for _ in 0..count {
        black_box(handle.call(black_box(method), black_box(payload))).expect("the call succeeds");
    }
}

/// A handle on instance `k` of the typed `ledger` v1, loaded in `engine`.
fn ledger_handle(engine: &Engine) -> InstanceHandle {
    engine.load("ledger", hotswap_test_modules::LEDGER_V1).expect("load ledger v1");
    engine.instance("ledger", "k").expect("a handle on ledger v1's instance k")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: call-instructions engine|keys|handle|handle-add|typed-balance|typed-deposit COUNT";
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
        "handle" => calls_by_handle(&handle, "noop", b"", count),
        "handle-add" => calls_by_handle(&handle, "add", b"1", count),
        "typed-balance" => calls_by_handle(&ledger_handle(&engine), "balance", b"", count),
        "typed-deposit" => calls_by_handle(&ledger_handle(&engine), "deposit", b"1", count),
        _ => panic!("{usage}"),
    }
}
