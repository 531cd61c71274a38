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
    // Typed session hooks (#[module] on_join/on_message/on_leave/on_tick).
    "chat-room",
    // The game demo's module, both versions (examples/game).
    "game1",
    "game2",
];

/// Builds of one package with one cargo feature each (`None`: no feature),
/// each copied to its own file and constant: one small crate stands for
/// many versions without a crate (and a compile of its own) per version.
const FEATURE_BUILDS: &[(&str, Option<&str>, &str)] = &[
    ("layouts", None, "LAYOUTS_V1"),
    ("layouts", Some("renamed"), "LAYOUTS_RENAMED"),
    ("layouts", Some("retyped"), "LAYOUTS_RETYPED"),
    ("layouts", Some("resized"), "LAYOUTS_RESIZED"),
    ("layouts", Some("variant-removed"), "LAYOUTS_VARIANT_REMOVED"),
    ("layouts", Some("field-added"), "LAYOUTS_FIELD_ADDED"),
    ("layouts", Some("reordered"), "LAYOUTS_REORDERED"),
    ("layouts", Some("bad-migrate"), "LAYOUTS_BAD_MIGRATE"),
    ("layouts", Some("good-migrate"), "LAYOUTS_GOOD_MIGRATE"),
    ("layouts", Some("variant-added"), "LAYOUTS_VARIANT_ADDED"),
    ("layouts", Some("from-counter"), "LAYOUTS_FROM_COUNTER"),
    // The SDK's `tracing` feature: the timer module's `log` method also emits a `tracing` event.
    ("timer", Some("tracing"), "TIMER_TRACING"),
    // Sessions: the room (raw hooks), and the same room as version 2.0.0.
    ("room", None, "ROOM_V1"),
    ("room", Some("v2"), "ROOM_V2"),
    ("room", Some("base-descriptor"), "ROOM_BASE_DESCRIPTOR"),
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
    for (package, feature, constant) in FEATURE_BUILDS {
        let mut cargo = Command::new(env::var("CARGO").unwrap());
        cargo.current_dir(workspace).arg("build").arg("--quiet").arg("--target-dir").arg(&target_dir);
        if release {
            cargo.arg("--release");
        }
        cargo.args(["-p", package]);
        if let Some(feature) = feature {
            cargo.args(["--features", feature]);
        }
        cargo.env_remove("RUSTC_WORKSPACE_WRAPPER").env_remove("RUSTC_WRAPPER");
        let status = cargo.status().expect("run cargo to build a test module");
        assert!(status.success(), "building {package} with feature {feature:?} failed: {status}");
        let built = profile_dir.join(format!("lib{}.so", package.replace('-', "_")));
        // Copied, not linked: the next build of the package replaces `built`.
        let file = profile_dir.join(format!("lib{}.so", constant.to_lowercase()));
        assert_ne!(
            built, file,
            "{constant} names the file the next build of {package} replaces: pick another constant"
        );
        std::fs::copy(&built, &file).unwrap_or_else(|error| panic!("copy {}: {error}", built.display()));
        writeln!(
            paths,
            "/// The built `{package}` module, feature {feature:?}.\npub const {constant}: &str = {:?};",
            file.display().to_string()
        )
        .unwrap();
    }
    std::fs::write(out_dir.join("modules.rs"), paths).unwrap();

    println!("cargo:rerun-if-changed=modules");
    println!("cargo:rerun-if-changed=../../examples/game/game1");
    println!("cargo:rerun-if-changed=../../examples/game/arena.rs");
    println!("cargo:rerun-if-changed=../../examples/game/game2");
    println!("cargo:rerun-if-changed=../../examples/chat");
    println!("cargo:rerun-if-changed=../module");
    println!("cargo:rerun-if-changed=../module-macros");
    println!("cargo:rerun-if-changed=../abi");
}
