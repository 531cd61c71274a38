//! The cost of one call, side by side in one criterion group:
//!
//! * `direct`: a Rust call of a trivial `#[inline(never)]` function;
//! * `libloading_fn_ptr`: the same kind of function (`hotlib_noop::noop`)
//!   through a raw fn pointer looked up once with libloading;
//! * `hot_lib_reloader`: that function through the wrapper that
//!   hot-lib-reloader's `hot_module` macro generates — the way its docs say
//!   to call a reloadable function. Each call takes the loader's `RwLock`
//!   and looks the symbol up with `dlsym`, which is what lets it see a
//!   reloaded library;
//! * `module_handle_ffi`: counter v1's `handle` entry point called directly
//!   through the module descriptor (no engine): what the SDK's panic guard
//!   and output buffer cost on their own;
//! * `engine_call`: `engine.call("counter", "k", "noop", b"")` on counter v1.
//!
//! Run with `cargo bench -p hotswap-bench --bench call`.

use std::ffi::c_void;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hotswap::{Engine, EngineConfig};
use hotswap_abi::{
    CallStatus, DESCRIPTOR_SYMBOL, DescriptorFn, ModuleBuf, ModuleDescriptor, RawBytes, RawStr,
};
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

/// Counter v1 opened by hand, one state started, for calling `handle` with no engine.
struct RawModule {
    descriptor: &'static ModuleDescriptor,
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
        // SAFETY: a fresh start (null previous) with valid out-pointers.
        let status = unsafe { (descriptor.init)(std::ptr::null(), &mut state, &mut out) };
        assert_eq!(status, CallStatus::OK, "counter v1 init");
        RawModule { descriptor, state, _library: library, _dir: dir }
    }

    /// One `noop` call, with its output buffer handed back as the engine does.
    fn noop(&self) -> CallStatus {
        let mut out = ModuleBuf::EMPTY;
        // SAFETY: `state` came from this library's init and is used by one
        // thread; the method and payload are 'static.
        let status = unsafe {
            (self.descriptor.handle)(self.state, RawStr::new("noop"), RawBytes::new(b""), &mut out)
        };
        // SAFETY: `out` was filled by this module and is returned to it once.
        unsafe { (self.descriptor.free_buf)(out) };
        status
    }
}

fn per_call(c: &mut Criterion) {
    // hot-lib-reloader: a private folder holding the built dylib.
    let hot_dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::copy(built_hotlib(), hot_dir.path().join("libhotlib_noop.so")).expect("copy the dylib");
    HOT_LIB_DIR.set(hot_dir).expect("set once");
    hot_noop::noop(); // loads the library and starts its watcher threads

    // libloading: the fn pointer is looked up once and kept.
    // SAFETY: hotlib-noop is a Rust dylib from this tree with no initialisers of its own.
    let library = unsafe { Library::new(built_hotlib()) }.expect("dlopen hotlib-noop");
    // SAFETY: `noop` is exported unmangled with exactly the type `fn()`.
    let raw_noop: fn() = *unsafe { library.get::<fn()>(b"noop\0") }.expect("the noop symbol");

    let raw_module = RawModule::open(Path::new(hotswap_test_modules::COUNTER_V1));

    let engine = Engine::new(EngineConfig::default());
    engine.load("counter", hotswap_test_modules::COUNTER_V1).expect("load counter v1");
    engine.call("counter", "k", "noop", b"").expect("start instance k");

    let mut group = c.benchmark_group("call");
    group.sample_size(60).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.bench_function("direct", |b| b.iter(direct_noop));
    group.bench_function("libloading_fn_ptr", |b| b.iter(|| black_box(raw_noop)()));
    group.bench_function("hot_lib_reloader", |b| b.iter(hot_noop::noop));
    group.bench_function("module_handle_ffi", |b| b.iter(|| raw_module.noop()));
    group.bench_function("engine_call", |b| {
        b.iter(|| engine.call(black_box("counter"), black_box("k"), black_box("noop"), black_box(b"")))
    });
    group.finish();
    drop(library);
}

criterion_group!(benches, per_call);
criterion_main!(benches);
