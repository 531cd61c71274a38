//! Builds the module crates under `modules/` (and the game demo's two
//! versions, under `examples/game/`) into a private target folder and
//! writes their paths into `modules.rs`, so tests, examples and benchmarks
//! load real `.so` files built from this tree.
//!
//! A separate target folder keeps this nested `cargo build` from waiting on
//! the lock of the build that runs this script.

use std::env;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::Command;

/// Package name of each module crate; the constant is its name in capitals.
const MODULES: &[&str] = &[
    "counter-v1",
    "counter-v2",
    "counter-init-panics",
    "counter-init-fails",
    "counter-handle-panics",
    "counter-wrong-abi",
    "counter-abi-v1",
    "counter-panic-abort",
    "counter-null-handle",
    "not-a-module",
    "tls-counter",
    "blob",
    // Typed modules (#[module]): layout 1, and the example (layout 2).
    "ledger-v1",
    "ledger-v2",
    // The chat room of examples/chat, raw and typed, two versions each: the
    // boilerplate comparison of BENCHMARKS.md, checked to behave the same.
    "chat-raw-v1",
    "chat-raw-v2",
    "chat-typed-v1",
    "chat-typed-v2",
    "timer",
    "timer-v2",
    // The game demo's module, both versions (examples/game).
    "game1",
    "game2",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().and_then(|crates| crates.parent()).unwrap();
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_dir = out_dir.join("target");
    let release = env::var("PROFILE").as_deref() == Ok("release");

    let mut cargo = Command::new(env::var("CARGO").unwrap());
    cargo.current_dir(workspace).arg("build").arg("--quiet").arg("--target-dir").arg(&target_dir);
    if release {
        cargo.arg("--release");
    }
    for package in MODULES {
        cargo.args(["-p", package]);
    }
    // Build the modules with plain rustc even when this runs under clippy.
    cargo.env_remove("RUSTC_WORKSPACE_WRAPPER").env_remove("RUSTC_WRAPPER");
    let status = cargo.status().expect("run cargo to build the test modules");
    assert!(status.success(), "building the test modules failed: {status}");

    let profile_dir = target_dir.join(if release { "release" } else { "debug" });
    let mut paths = String::new();
    for package in MODULES {
        let file = profile_dir.join(format!("lib{}.so", package.replace('-', "_")));
        assert!(file.exists(), "cargo built {package} but {} is missing", file.display());
        let constant = package.replace('-', "_").to_uppercase();
        writeln!(
            paths,
            "/// The built `{package}` module.\npub const {constant}: &str = {:?};",
            file.display().to_string()
        )
        .unwrap();
    }
    std::fs::write(out_dir.join("modules.rs"), paths).unwrap();

    println!("cargo:rerun-if-changed=modules");
    println!("cargo:rerun-if-changed=../../examples/game/game1");
    println!("cargo:rerun-if-changed=../../examples/game/game2");
    println!("cargo:rerun-if-changed=../../examples/chat");
    println!("cargo:rerun-if-changed=../module");
    println!("cargo:rerun-if-changed=../module-macros");
    println!("cargo:rerun-if-changed=../abi");
}
