//! The trivial function that `benches/per_call.rs` calls through a raw
//! `libloading` function pointer and through hot-lib-reloader.

/// Does nothing; exported unmangled so it can be looked up with `dlsym`.
#[unsafe(no_mangle)]
pub fn noop() {}
