//! Embed hotswap in a server: load native Rust modules, call them, and
//! replace them with new versions while calls keep arriving, without losing
//! their state.
//!
//! # Guarantees
//!
//! 1. **A call runs entirely on one version.** Calls that arrive while a
//!    swap holds the instances wait for it and then run on the new version;
//!    they do not fail. A swap never holds other instances while it waits for
//!    a busy one, so one long call does not freeze the module (tests:
//!    `concurrency::calls_never_fail_across_200_swaps_and_none_is_lost`,
//!    `races::a_swap_waiting_for_a_long_call_holds_no_other_instance`).
//! 2. **A failed swap changes nothing.** Whatever step fails (missing, empty
//!    or non-ELF file, a library that is not a hotswap module, wrong magic
//!    or ABI version, a descriptor with a null entry point
//!    (`abi::a_null_entry_point_is_refused_at_load_naming_it_and_the_old_version_keeps_serving`),
//!    a different module `NAME`, a module built with
//!    `panic = "abort"`, `init` returning an error or panicking, a snapshot
//!    the new version cannot read, a busy instance past
//!    [`EngineConfig::swap_timeout`]), every instance stays on the old
//!    version with its state untouched, and [`Engine::load`] returns a
//!    [`SwapError`] that says what and why. A swap moves all instances or none
//!    (`races::a_swap_past_its_deadline_changes_nothing_and_others_kept_serving`).
//! 3. **One swap per module at a time.** A second `load`, `rollback` or
//!    `unload` of a module being swapped gets [`SwapError::SwapInProgress`]
//!    at once; it is not queued.
//! 4. **Old code is unloaded once no call uses it** — that is, as soon as
//!    the swap publishes, since calls hold their instance for their whole
//!    duration. Whether its mapping really left memory is checked in
//!    `/proc/self/maps` and reported ([`SwapReport::old_code_unmapped`],
//!    [`ModuleStatus::resident_retired`]); versions that could not leave
//!    are capped by [`EngineConfig::max_resident_retired`].
//! 5. **A panic in a module never crosses the FFI boundary.** The SDK
//!    catches it inside the module; the call returns
//!    [`CallError::Panicked`], it is counted, and every other instance
//!    carries on.
//! 6. **No acknowledged update is lost to a race.** An [`Engine::adopt`]
//!    racing first calls, and a [`Engine::remove_instance`] racing a swap,
//!    neither overwrite a started instance nor stall the swap
//!    (`races::adopt_racing_first_calls_never_loses_an_acknowledged_update`,
//!    `races::remove_instance_during_a_swap_does_not_stall_the_swap`).
//! 7. **Clients cannot exhaust instances.** [`Engine::set_max_instances`]
//!    caps new instances per module; existing ones keep working and saved
//!    state is never refused for its size (`tests/engine/instances.rs`).
//! 8. **Timers survive swaps and travel with the state.** A timer a module
//!    sets with `ctx.after` is kept with its instance (not in the module's
//!    state), so a swap keeps it; [`ModuleSnapshot::timers`] carries it to
//!    a new process or to disk, where [`Engine::restore`] and
//!    [`Engine::adopt`] bring it back with its wall-clock due time. A host
//!    runs due timers with [`Engine::take_due_timers`] and
//!    [`Engine::run_timer`], which removes a timer in the same step as its
//!    call: every snapshot holds a timer or what it did, never both or
//!    neither, and a timer runs once
//!    (`timers::every_snapshot_has_each_timer_or_its_effect_exactly_once_while_timers_run`).
//!    An instance has at most [`EngineConfig::max_timers_per_instance`]
//!    pending; `ctx.after` past it is refused, naming the limit.
//!
//! # How a swap works
//!
//! The new file is copied to a private name (so `dlopen` really loads it,
//! and nobody can overwrite the mapped file), opened beside the old version
//! and verified. Then the engine holds every instance of the module: it
//! closes the module's gate (new calls wait), takes every instance, and if
//! one stays busy past a short grace it lets everything go, reopens the gate
//! for the others and waits for that one alone before trying again. Holding
//! them all, it calls `snapshot` on the old version and
//! `init(Some(previous))` on the new one for each. If all succeed, every instance
//! is republished on the new version and released; otherwise the new states
//! are dropped and the instances are released unchanged. The time instances
//! are held is [`SwapReport::pause`]: the migration time of all instances
//! of the module, since they move together.
//!
//! # Trying a swap first
//!
//! [`Engine::dry_run`] opens a new file beside the running version and has
//! it take over a copy of every live instance's state, one instance at a
//! time (each held only for its own snapshot), then unloads it: the
//! [`DryRunReport`] says which instances would migrate, which the new
//! version refuses and why, and the planned state layout change. Nothing is
//! published, and calls keep running (`tests/engine/dry_run.rs`).
//!
//! # Features
//!
//! `serde` (off by default): `Serialize`/`Deserialize` on the types hosts
//! store or print ([`ModuleSnapshot`], [`EngineStatus`], [`SwapReport`],
//! [`DryRunReport`], [`ModuleInfo`] and what they contain), and typed calls
//! (`Engine::call_typed`, `InstanceHandle::call_typed`) that send a
//! `Serialize` argument as JSON and decode the JSON reply.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Arc::new(hotswap::Engine::new(hotswap::EngineConfig::default()));
//! engine.load("ledger", "target/release/libledger.so")?; // first load
//! let reply = engine.call("ledger", "alice", "deposit", b"10")?; // module, instance, method, payload
//! println!("balance: {}", String::from_utf8_lossy(&reply));
//!
//! // Later, while other threads keep calling: swap to the new build.
//! match engine.load("ledger", "target/release/libledger.so") {
//!     Ok(report) => println!("swapped: {report}"),
//!     Err(refused) => eprintln!("kept the old version: {refused}"),
//! }
//! engine.rollback("ledger")?; // back to the version before, as an ordinary swap
//! for module in engine.status().modules {
//!     println!("{} {}: {} calls", module.name, module.current.version, module.calls);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Modules are written with the `hotswap-module` crate; see its docs and
//! `docs/writing-a-module.md`.

mod code;
mod config;
mod dry_run;
mod engine;
mod error;
mod host;
mod maps;
mod private_dir;
mod snapshot_bytes;
mod status;
mod sync;
#[cfg(feature = "serde")]
mod typed;

/// Named only so that the doc tests on it can show that a state cannot be
/// dropped twice; hosts never hold one (the engine owns every state).
#[doc(hidden)]
pub use code::ModuleState;
pub use code::{MethodInfo, ModuleInfo};
pub use config::{EngineConfig, PushSink, TimerWake};
pub use dry_run::{DryRunReport, TrialInstance, TrialOutcome};
pub use engine::{Engine, InstanceHandle};
pub use error::{CallError, Fault, SnapshotError, SwapError};
pub use host::Push;
pub use snapshot_bytes::SnapshotBytesError;
pub use status::{
    DueTimer, EngineStatus, InstanceStatus, ModuleSnapshot, ModuleStatus, PartialSnapshot, RetiredVersion,
    SavedTimer, SwapInProgress, SwapReport, VersionCalls,
};
#[cfg(feature = "serde")]
pub use typed::TypedCallError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Engine>();
    }
}
