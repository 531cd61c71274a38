//! Paths of the sample modules under `modules/`, built by this crate's build
//! script for the current profile. Used by hotswap's tests, examples and
//! benchmarks: every one of them loads real `.so` files.
//!
//! | constant | module |
//! |---|---|
//! | [`COUNTER_V1`] | `counter` 1.0.0, an 8-byte total; also reads 2.x snapshots |
//! | [`COUNTER_V2`] | `counter` 2.0.0, a changed layout with a migration from 1.x |
//! | [`COUNTER_INIT_PANICS`] | `counter` whose `init` panics when it migrates a state |
//! | [`COUNTER_INIT_FAILS`] | `counter` whose `init` always returns an error |
//! | [`COUNTER_HANDLE_PANICS`] | `counter` whose `panic` method panics |
//! | [`COUNTER_WRONG_ABI`] | a descriptor for a future ABI version |
//! | [`COUNTER_ABI_V1`] | a descriptor of the old ABI 1, as a module built before ABI 2 |
//! | [`COUNTER_PANIC_ABORT`] | a descriptor that declares `panic = "abort"` |
//! | [`COUNTER_NULL_HANDLE`] | a working `counter` whose descriptor has a null `handle` |
//! | [`NOT_A_MODULE`] | a shared library that is not a hotswap module |
//! | [`TLS_COUNTER`] | `tls-counter`, with a `thread_local!` that has a destructor |
//! | [`TIMER`] | `timer` 1.0.0, sets timers (`ctx.after`) and records when they fire |
//! | [`TIMER_V2`] | `timer` 2.0.0, the same code under the next version |
//! | [`BLOB`] | `blob`, a state of N bytes (method `resize`), for swap-pause benchmarks |
//! | [`LEDGER_V1`] | `ledger` 1.0.0, typed (`#[module]`, layout 1): a balance |
//! | [`CHAT_ROOM`] | `chat-room` 1.0.0, typed session hooks: joins by `?name=`, broadcasts each message with its author's session, counts ticks |
//! | [`LEDGER_V2`] | `ledger` 2.0.0, the typed module of issue 8 (layout 2), migrating layout 1 |
//! | [`GAME1`] | `game` 1001 ("game1"), the game demo's module from `examples/game/game1` |
//! | [`GAME2`] | `game` 1002 ("game2"), its next version with a migrated layout, from `examples/game/game2` |
//! | [`LAYOUTS_V1`] | `layouts` 1.0.0, a typed state (envelope, layout 1): a `u32`, a nested `{u16, u16}`, an enum, a string, a list |
//! | [`LAYOUTS_RENAMED`], [`LAYOUTS_RETYPED`], [`LAYOUTS_RESIZED`], [`LAYOUTS_VARIANT_REMOVED`], [`LAYOUTS_FIELD_ADDED`], [`LAYOUTS_REORDERED`] | `layouts` still at layout 1 with a field renamed, `u32` → `String`, `{u16, u16}` → `{u8, u8, u16}`, an enum variant removed, a field added, two fields swapped: each must be refused |
//! | [`LAYOUTS_BAD_MIGRATE`] | `layouts` layout 2 whose `migrate` declares layout 1 wrongly: must be refused |
//! | [`LAYOUTS_GOOD_MIGRATE`], [`LAYOUTS_VARIANT_ADDED`] | `layouts` layout 2 with a correct `migrate`; layout 1 with an enum variant appended: both read layout 1 |
//! | [`LAYOUTS_FROM_COUNTER`] | a typed `counter` 3.0.0 whose `migrate` reads the raw 8-byte snapshot of `counter` 1.x |

include!(concat!(env!("OUT_DIR"), "/modules.rs"));
