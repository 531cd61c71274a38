//! What hotswap's end-to-end tests (`tests/daemon`) and the daemon's
//! benchmarks (`crates/bench`: `watch-latency`, `upgrade-load`) share, so
//! that each has one copy:
//!
//! - [`http`]: a hand-written HTTP/1.1 client. It is deliberately not an
//!   HTTP client crate: the tests read a response byte by byte as the daemon
//!   sent it (a reset or an end of file in the middle of one is what a test
//!   of a process upgrade looks for), send exactly the bytes a test chose,
//!   and see which pid answered (`hotswap-pid`).
//! - [`Daemon`]: a `hotswap serve` process started in a folder, ready once
//!   its admin socket answers, stopped by its pid when dropped, followed
//!   across process upgrades.
//! - [`process`]: pids: alive or not, waiting for an exit, stopping one.
//! - [`folder`]: the layout of a daemon's private folder (config, admin
//!   socket, log) and files installed into it with the modes the daemon's
//!   load policy accepts.
//!
//! Everything here panics on what a harness cannot go on without (a folder
//! it cannot create, a daemon that never answers) with a message that says
//! what happened; what a test or benchmark measures (a request that failed)
//! is returned.

mod daemon;
pub mod folder;
pub mod http;
pub mod process;

pub use daemon::Daemon;
pub use http::{ExchangeError, Response};
