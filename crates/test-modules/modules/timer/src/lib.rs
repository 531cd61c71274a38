//! `timer` 1.0.0: sets timers with `ctx.after` and records when each fires,
//! for the tests of timers (crates/engine/tests/engine/timers.rs,
//! tests/daemon/timers.rs). `timer-v2` is the same code as 2.0.0.
//!
//! | method | payload | does |
//! |---|---|---|
//! | `remind` | `DELAY_MS TAG` | `ctx.after(DELAY_MS, "fire", TAG)` |
//! | `remind_then_fail` | `DELAY_MS TAG` | sets the timer, then returns an error |
//! | `remind_then_panic` | `DELAY_MS TAG` | sets the timer, then panics |
//! | `schedule` | `DELAY_MS METHOD [PAYLOAD]` | `ctx.after(DELAY_MS, METHOD, PAYLOAD)` |
//! | `sleep` | `MS` | sleeps that long (a slow call) |
//! | `fire` | `TAG` | records TAG, the wall clock (unix ms) and this version |
//! | `fired` | | one line per fire: `TAG UNIX_MS VERSION` |
//! | `refusals` | | what `ctx.after` answered in `init` and in the last `snapshot` |
//! | `log` | text | logs it with `ctx.log` and with the `log` crate's `info!` (and `tracing::info!`, built with feature `tracing`) |
//!
//! Its descriptor wraps the SDK's `init` and `snapshot` with a try of the
//! host's `after` (a module built with the SDK gets no `Context` there), so
//! the tests can show that the host refuses a timer outside a call.

include!("module.rs");
