//! The typed module of issue 8 compiles as written from a crate outside this
//! workspace whose only dependencies are `hotswap-module` and `serde`.
//!
//! It lives here, with the SDK, because that is the promise it checks: the
//! code `#[module]` generates reaches everything else (serde_json, the state
//! envelope) through `hotswap-module`. Inside the workspace that would go
//! unseen, since every crate there can name the workspace's dependencies.
//!
//! The example is read from `ledger-v2` (which carries it verbatim), built
//! with `cargo build --offline` against a copy of the workspace's lock file
//! (so the same versions, all already on this machine), into a target folder
//! kept between runs so serde is compiled once.

use std::path::Path;
use std::process::Command;

#[test]
fn the_issue_example_compiles_as_written_in_a_crate_outside_the_workspace() {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = sdk.parent().and_then(Path::parent).unwrap();
    let source =
        std::fs::read_to_string(workspace.join("crates/test-modules/modules/ledger-v2/src/lib.rs")).unwrap();
    let start = source
        .find("use hotswap_module::{Context, ModuleError, Previous};")
        .expect("the example's first line");
    let end = source.find("\n#[cfg(test)]").expect("the end of the example");
    let example = &source[start..=end];
    assert!(
        example.contains("#[hotswap_module::module(name = \"ledger\", version = \"2.0.0\", layout = 2)]")
    );

    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        r#"[package]
name = "ledger-outside"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
hotswap-module = {{ path = {sdk:?} }}
serde = {{ version = "1", features = ["derive"] }}

# A workspace of its own.
[workspace]
"#
    );
    std::fs::write(dir.path().join("Cargo.toml"), manifest).unwrap();
    std::fs::copy(workspace.join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/lib.rs"), example).unwrap();

    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("outside-crate");
    let output = Command::new(env!("CARGO"))
        .current_dir(dir.path())
        .args(["build", "--offline", "--quiet", "--target-dir"])
        .arg(&target)
        // Build with plain rustc even when the tests run under clippy or a cache.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "the example did not build outside the workspace ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let library = std::fs::read(target.join("debug/libledger_outside.so")).expect("the built module");
    let export = b"hotswap_module_descriptor";
    assert!(library.windows(export.len()).any(|window| window == export), "the module is exported");
}
