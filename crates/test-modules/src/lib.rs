//! Paths of the sample modules under `modules/`, built by this crate's build
//! script for the current profile. Used by hotswap's tests, examples and
//! benchmarks: every one of them loads real `.so` files.
//!
//! | constant | module |
//! |---|---|
//! | [`COUNTER_V1`] | `counter` 1.0.0, an 8-byte total; also reads 2.x snapshots |
//! | [`COUNTER_V2`] | `counter` 2.0.0, a changed layout with a migration from 1.x |
//! | [`COUNTER_INIT_PANICS`] | `counter` whose `init` panics |
//! | [`COUNTER_INIT_FAILS`] | `counter` whose `init` returns an error |
//! | [`COUNTER_HANDLE_PANICS`] | `counter` whose `panic` method panics |
//! | [`COUNTER_WRONG_ABI`] | a descriptor for a future ABI version |
//! | [`NOT_A_MODULE`] | a shared library that is not a hotswap module |
//! | [`TLS_COUNTER`] | `tls-counter`, with a `thread_local!` that has a destructor |

include!(concat!(env!("OUT_DIR"), "/modules.rs"));
