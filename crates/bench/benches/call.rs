//! The cost of one call, side by side in one criterion group:
//!
//! * `direct`: a Rust call of a trivial `#[inline(never)]` function;
//! * `libloading_fn_ptr`: a trivial function in a loaded library (counter
//!   v1's descriptor function, which returns the address of a static)
//!   through a raw fn pointer looked up once with libloading;
//! * `module_handle_ffi`: counter v1's `handle` entry point called directly
//!   through the module descriptor (no engine): what the SDK's panic guard
//!   and output buffer cost on their own;
//! * `engine_call`: `engine.call("counter", "k", "noop", b"")` on counter v1;
//! * `handle_call`: the same call through an [`hotswap::InstanceHandle`]
//!   from `engine.instance("counter", "k")`, which skips the module and
//!   instance lookups;
//! * `engine_call_1000_keys`: `engine.call` on 1,000 instances in turn:
//!   the lookup by name in a map of 1,000 instances, none called twice in
//!   a row (closer to a server's calls than one key called again and again);
//! * `handle_add`: counter's raw `add` with the payload `1` through a
//!   handle (the module parses the number and formats the total): the raw
//!   call with an argument and a reply, beside the typed rows;
//! * `typed_balance`: the typed `ledger` v1's `balance` through a handle: no
//!   argument, a JSON number in reply (what `#[module]` adds to a raw
//!   `noop`: the dispatch by method table and the reply's JSON encoding);
//! * `typed_deposit`: ledger v1's `deposit` with the JSON argument `1`: the
//!   argument decoded, the balance added to and encoded;
//! * `typed_deposit_object`: ledger v2's `deposit` with
//!   `{"amount":1,"note":""}`: a struct decoded from a JSON object. This
//!   method also pushes a history entry and logs a line (a `tracing` event,
//!   with no subscriber in this bench), so it is more than the JSON.
//!
//! The comparison with hot-lib-reloader, which the call-cost target is
//! about, runs in its own workspace (`benches/baseline`, see BENCHMARKS.md)
//! so that this lock file never holds hot-lib-reloader's older dependencies.
//!
//! Run with `cargo bench -p hotswap-bench --bench call`.

use std::ffi::c_void;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hotswap::{Engine, EngineConfig};
use hotswap_abi::{
    CallStatus, DESCRIPTOR_SYMBOL, DescriptorFn, FreeBufFn, HandleFn, HostApi, ModuleBuf, ModuleDescriptor,
    RawBytes, RawHost, RawStr,
};
use libloading::Library;

#[inline(never)]
fn direct_noop() {
    black_box(());
}

/// Counter v1 opened by hand, one state started, for calling `handle` with no engine.
struct RawModule {
    /// The descriptor function, looked up once.
    describe: DescriptorFn,
    /// The entry points `noop` calls, taken out of the descriptor once.
    handle: HandleFn,
    free_buf: FreeBufFn,
    state: *mut c_void,
    _library: Library,
    _dir: tempfile::TempDir,
}

impl RawModule {
    fn open(module_file: &Path) -> RawModule {
        // A private copy, so this handle is not shared with the engine's.
        let dir = tempfile::tempdir().expect("a temporary folder");
        let copy = dir.path().join("counter-raw.so");
        std::fs::copy(module_file, &copy).expect("copy the counter module");
        // SAFETY: counter v1 is a hotswap module built from this tree; its only
        // initialisers are std's.
        let library = unsafe { Library::new(&copy) }.expect("dlopen counter v1");
        // SAFETY: every hotswap module exports the descriptor function with this signature.
        let describe: DescriptorFn =
            *unsafe { library.get::<DescriptorFn>(DESCRIPTOR_SYMBOL) }.expect("descriptor");
        // SAFETY: counter v1 is built against this tree's ABI, so the pointer is
        // to a full static ABI-1 descriptor, valid while `library` is open
        // (it is kept in the returned value, which outlives every use).
        let descriptor: &'static ModuleDescriptor = unsafe { &*describe().cast::<ModuleDescriptor>() };
        let mut state = std::ptr::null_mut();
        let mut out = ModuleBuf::EMPTY;
        let init = descriptor.init.expect("counter v1 has an init entry point");
        // SAFETY: a fresh start (null previous) with valid out-pointers.
        let status = unsafe { init(std::ptr::null(), std::ptr::null(), &mut state, &mut out) };
        assert_eq!(status, CallStatus::OK, "counter v1 init");
        RawModule {
            describe,
            handle: descriptor.handle.expect("counter v1 has a handle entry point"),
            free_buf: descriptor.free_buf.expect("counter v1 has a free_buf entry point"),
            state,
            _library: library,
            _dir: dir,
        }
    }

    /// One `noop` call, with a reply buffer lent and an error buffer handed
    /// back if the module filled one, as the engine does.
    fn noop(&self) -> CallStatus {
        let mut out = ModuleBuf::EMPTY;
        let mut reply = Vec::<u8>::new();
        let host = RawHost { api: &BENCH_HOST, call: std::ptr::from_mut(&mut reply).cast() };
        // SAFETY: `state` came from this library's init and is used by one
        // thread; the method and payload are 'static, the host outlives the call.
        let status =
            unsafe { (self.handle)(&host, self.state, RawStr::new("noop"), RawBytes::new(b""), &mut out) };
        if !out.ptr.is_null() {
            // SAFETY: `out` was filled by this module and is returned to it once.
            unsafe { (self.free_buf)(out) };
        }
        black_box(reply);
        status
    }
}

/// The bench's host: a reply buffer (the call pointer is a `Vec<u8>`) and
/// no other service.
static BENCH_HOST: HostApi = HostApi {
    size: size_of::<HostApi>() as u32,
    reply: Some(bench_reply),
    now: None,
    log: None,
    after: None,
    instance: None,
    send: None,
    broadcast: None,
    close: None,
};

unsafe extern "C" fn bench_reply(call: *mut c_void, bytes: RawBytes) {
    // SAFETY: the bench lends a `Vec<u8>` as the call pointer, and the
    // module's bytes are readable during this call.
    unsafe { (*call.cast::<Vec<u8>>()).extend_from_slice(bytes.as_slice()) };
}

fn per_call(c: &mut Criterion) {
    let raw_module = RawModule::open(Path::new(hotswap_test_modules::COUNTER_V1));
    let describe = raw_module.describe;

    let engine = Engine::new(EngineConfig::default());
    engine.load("counter", hotswap_test_modules::COUNTER_V1).expect("load counter v1");
    engine.call("counter", "k", "noop", b"").expect("start instance k");
    let handle = engine.instance("counter", "k").expect("a handle on instance k");

    let mut group = c.benchmark_group("call");
    group.sample_size(60).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.bench_function("direct", |b| b.iter(direct_noop));
    // SAFETY: the descriptor function takes no arguments and only returns
    // the address of a static; its library stays open in `raw_module`,
    // which outlives the group.
    group.bench_function("libloading_fn_ptr", |b| b.iter(|| unsafe { black_box(describe)() }));
    group.bench_function("module_handle_ffi", |b| b.iter(|| raw_module.noop()));
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

    // The raw call with an argument and a reply, and typed methods (ledger
    // v1 and v2 are both called "ledger", so each has an engine).
    group.bench_function("handle_add", |b| b.iter(|| handle.call(black_box("add"), black_box(b"1"))));
    let ledger_v1 = Engine::new(EngineConfig::default());
    ledger_v1.load("ledger", hotswap_test_modules::LEDGER_V1).expect("load ledger v1");
    let ledger_v1 = ledger_v1.instance("ledger", "k").expect("a handle on ledger v1's instance k");
    assert_eq!(ledger_v1.call("deposit", b"1").expect("a deposit on ledger v1"), b"1");
    group
        .bench_function("typed_balance", |b| b.iter(|| ledger_v1.call(black_box("balance"), black_box(b""))));
    group.bench_function("typed_deposit", |b| {
        b.iter(|| ledger_v1.call(black_box("deposit"), black_box(b"1")))
    });
    let ledger_v2 = Engine::new(EngineConfig::default());
    ledger_v2.load("ledger", hotswap_test_modules::LEDGER_V2).expect("load ledger v2");
    let ledger_v2 = ledger_v2.instance("ledger", "k").expect("a handle on ledger v2's instance k");
    let deposit = br#"{"amount":1,"note":""}"#;
    assert_eq!(ledger_v2.call("deposit", deposit).expect("a deposit on ledger v2"), b"1");
    group.bench_function("typed_deposit_object", |b| {
        b.iter(|| ledger_v2.call(black_box("deposit"), black_box(deposit)))
    });
    group.finish();
}

criterion_group!(benches, per_call);
criterion_main!(benches);
