//! Integration tests of the engine's guarantees, against real module files
//! built by `hotswap-test-modules`. One test binary, several files.

mod abi;
mod call_routing;
mod chat;
mod concurrency;
mod dry_run;
mod host_typed_calls;
mod instances;
mod layouts;
mod panics;
mod races;
mod refusals;
mod sessions;
mod sessions_typed;
mod swap;
mod timers;
mod typed;
mod unloading;

use std::path::{Path, PathBuf};

use hotswap::{Engine, EngineConfig};

/// An engine whose private copies go to a folder of the test's own.
pub fn engine_in(dir: &Path) -> Engine {
    Engine::new(EngineConfig { private_dir: Some(dir.join("private")), ..EngineConfig::default() })
}

pub fn call_text(engine: &Engine, instance: &str, method: &str, payload: &str) -> String {
    let reply = engine
        .call("counter", instance, method, payload.as_bytes())
        .unwrap_or_else(|error| panic!("{method} on {instance} failed: {error}"));
    String::from_utf8(reply).unwrap()
}

/// Copies a module file into `dir` under `name`, as an operator would deploy it.
pub fn deploy(from: &str, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(from, &to).unwrap();
    to
}
