//! The cost of one call that can be replaced at run time, hotswap against
//! hot-lib-reloader, side by side in one criterion group (one process, one
//! run):
//!
//! * `direct`: a Rust call of a trivial `#[inline(never)]` function;
//! * `libloading_fn_ptr`: `hotlib_noop::noop` through a raw fn pointer
//!   looked up once with libloading (nothing can replace it: the floor);
//! * `hot_lib_reloader`: the same function through the wrapper that
//!   hot-lib-reloader's `hot_module` macro generates, the way its docs say
//!   to call a reloadable function. Each call takes the loader's `RwLock`
//!   and looks the symbol up with `dlsym`, which is what lets it see a
//!   reloaded library;
//! * `engine_call`: `engine.call("counter", "k", "noop", b"")` on counter v1
//!   (built in release by `hotswap-test-modules`), instance started;
//! * `handle_call`: the same call through the [`hotswap::InstanceHandle`]
//!   from `engine.instance("counter", "k")`, which skips the module and
//!   instance lookups;
//! * `engine_call_1000_keys`: `engine.call` on 1,000 instances in turn:
//!   the lookup by name in a map of 1,000 instances, none called twice in
//!   a row (closer to a server's calls than one key called again and again);
//! * `typed_balance` and `typed_deposit`: the typed `ledger` v1's `balance`
//!   (no argument, a JSON number in reply) and `deposit` with the JSON
//!   argument `1`, through a handle, beside `handle_call`'s raw `noop`
//!   (`crates/bench/benches/call.rs` has more typed rows).
//!
//! Run with `cargo bench --manifest-path benches/baseline/Cargo.toml`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hotswap::{Engine, EngineConfig};
use libloading::Library;

/// The directory hot-lib-reloader watches and loads from: a private copy of
/// the built `libhotlib_noop.so`, so its `-hot-N` copies land there and not
/// in the target folder.
static HOT_LIB_DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fn hot_lib_dir() -> PathBuf {
    HOT_LIB_DIR.get().expect("set up before the first hot-lib-reloader call").path().to_owned()
}

#[hot_lib_reloader::hot_module(dylib = "hotlib_noop", lib_dir = super::hot_lib_dir())]
mod hot_noop {
    #[hot_functions]
    extern "Rust" {
        pub fn noop();
    }
}

#[inline(never)]
fn direct_noop() {
    black_box(());
}

/// `libhotlib_noop.so` as cargo built it, beside this benchmark's binary
/// (`target/release/deps`): the dylib of a path dependency has no hash in its name.
fn built_hotlib() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of this benchmark");
    let deps = exe.parent().expect("the benchmark lives in a folder");
    let file = deps.join("libhotlib_noop.so");
    assert!(file.exists(), "{} is missing: hotlib-noop is a dev-dependency, cargo builds it", file.display());
    file
}

fn per_call(c: &mut Criterion) {
    // hot-lib-reloader: a private folder holding the built dylib.
    let hot_dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::copy(built_hotlib(), hot_dir.path().join("libhotlib_noop.so")).expect("copy the dylib");
    HOT_LIB_DIR.set(hot_dir).expect("set once");
    hot_noop::noop(); // loads the library and starts its watcher threads

    // libloading: the fn pointer is looked up once and kept.
    // SAFETY: hotlib-noop is a Rust dylib from this workspace with no
    // initialisers of its own (std's are already run by this process).
    let library = unsafe { Library::new(built_hotlib()) }.expect("dlopen hotlib-noop");
    // SAFETY: `noop` is exported unmangled with exactly the type `fn()`, and
    // the pointer is only called while `library` is open (it is closed after
    // the group has finished).
    let raw_noop: fn() = *unsafe { library.get::<fn()>(c"noop") }.expect("the noop symbol");

    let engine = Engine::new(EngineConfig::default());
    engine.load("counter", hotswap_test_modules::COUNTER_V1).expect("load counter v1");
    engine.call("counter", "k", "noop", b"").expect("start instance k");
    let handle = engine.instance("counter", "k").expect("a handle on instance k");

    let mut group = c.benchmark_group("call");
    group.sample_size(60).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.bench_function("direct", |b| b.iter(direct_noop));
    group.bench_function("libloading_fn_ptr", |b| b.iter(|| black_box(raw_noop)()));
    group.bench_function("hot_lib_reloader", |b| b.iter(hot_noop::noop));
    group.bench_function("engine_call", |b| {
        b.iter(|| engine.call(black_box("counter"), black_box("k"), black_box("noop"), black_box(b"")))
    });
    group.bench_function("handle_call", |b| b.iter(|| handle.call(black_box("noop"), black_box(b""))));
    // Instances called in turn: each call looks its instance up in a map
    // of 1,000 and never names the one called before it.
    let keys: Vec<String> = (0..1000).map(|n| format!("room-{n}")).collect();
    for key in &keys {
        engine.call("counter", key, "noop", b"").expect("start an instance");
    }
    let mut next = 0;
    group.bench_function("engine_call_1000_keys", |b| {
        b.iter(|| {
            next += 1;
            if next == keys.len() {
                next = 0;
            }
            engine.call(black_box("counter"), black_box(&keys[next]), black_box("noop"), black_box(b""))
        })
    });
    let ledger = Engine::new(EngineConfig::default());
    ledger.load("ledger", hotswap_test_modules::LEDGER_V1).expect("load ledger v1");
    let ledger = ledger.instance("ledger", "k").expect("a handle on ledger v1's instance k");
    assert_eq!(ledger.call("deposit", b"1").expect("a deposit on ledger v1"), b"1");
    group.bench_function("typed_balance", |b| b.iter(|| ledger.call(black_box("balance"), black_box(b""))));
    group.bench_function("typed_deposit", |b| b.iter(|| ledger.call(black_box("deposit"), black_box(b"1"))));
    group.finish();
    drop(library);
}

criterion_group!(benches, per_call);
criterion_main!(benches);
