//! The CLI as a new user meets it: help that explains every argument and
//! shows an example, flags only where they do something, errors in JSON
//! with `--json`, each error said once and one way.

use std::process::{Command, Output, Stdio};

use crate::{COUNTER_CONFIG, Setup, json, stderr, stdout};

const COMMANDS: [&str; 9] =
    ["serve", "status", "load", "rollback", "call", "snapshot", "upgrade", "instances", "remove-instance"];

fn hotswap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hotswap")).args(args).stdin(Stdio::null()).output().unwrap()
}

/// The lines of one section of a help text (`Arguments:`, `Options:`).
fn section<'a>(help: &'a str, title: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|line| line.trim_end() != title)
        .skip(1)
        .take_while(|line| line.starts_with(' '))
        .collect()
}

#[test]
fn every_argument_has_help_and_every_command_an_example() {
    for command in COMMANDS {
        let output = hotswap(&[command, "--help"]);
        assert!(output.status.success(), "{command}: {}", stderr(&output));
        let help = stdout(&output);
        for line in section(&help, "Arguments:") {
            let (name, text) = line.trim_start().split_once("  ").unwrap_or((line.trim(), ""));
            assert!(!text.trim().is_empty(), "`hotswap {command}`: argument {name} has no help:\n{help}");
        }
        assert!(help.contains(&format!("Example:\n  hotswap {command}")), "`hotswap {command}`:\n{help}");
    }
}

#[test]
fn flags_appear_only_where_they_do_something() {
    let serve = stdout(&hotswap(&["serve", "--help"]));
    for flag in ["--json", "--admin", "--token-file"] {
        assert!(!serve.contains(flag), "`hotswap serve --help` offers {flag}:\n{serve}");
        let output = hotswap(&["serve", flag, "x"]);
        assert!(!output.status.success(), "serve took {flag}");
    }
    let call = stdout(&hotswap(&["call", "--help"]));
    assert!(!call.contains("--json"), "`hotswap call --help` offers --json:\n{call}");
    assert!(!hotswap(&["call", "counter", "get", "--json"]).status.success(), "call took --json");
    // Before the command, as before: still refused where it does nothing.
    let output = hotswap(&["--json", "--config", "/nonexistent/h.toml", "serve"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--json"), "{}", stderr(&output));

    for command in ["status", "load", "rollback", "snapshot", "upgrade", "instances", "remove-instance"] {
        let help = stdout(&hotswap(&[command, "--help"]));
        for flag in ["--json", "--admin", "--token-file", "--config"] {
            assert!(help.contains(flag), "`hotswap {command} --help` lacks {flag}:\n{help}");
        }
    }
}

#[test]
fn with_json_errors_are_json_too() {
    let setup = Setup::new(COUNTER_CONFIG);
    // No daemon: the reason, as the admin API's error document.
    for args in [["--json", "status"], ["status", "--json"]] {
        let output = setup.cli(&args);
        assert!(!output.status.success());
        let error = json(&output.stdout)["error"].as_str().unwrap().to_owned();
        assert!(error.contains("cannot reach the hotswap daemon"), "{error}");
        assert_eq!(stderr(&output), "", "the error is said once, on stdout as JSON");
    }
    let daemon = setup.start();
    let output = setup.cli(&["load", "ledger", "--json"]);
    assert!(!output.status.success());
    assert!(json(&output.stdout)["error"].as_str().unwrap().contains("'ledger' is not configured"));
    drop(daemon);
}

#[test]
fn a_start_up_error_is_printed_once() {
    let output = hotswap(&["serve", "--config", "/nonexistent/hotswap.toml"]);
    assert!(!output.status.success());
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert_eq!(text.matches("/nonexistent/hotswap.toml").count(), 1, "{text}");
}

#[test]
fn a_module_that_is_not_configured_is_named_the_same_way_by_every_command() {
    let setup = Setup::new(COUNTER_CONFIG);
    let _daemon = setup.start();
    for command in ["load", "rollback"] {
        let output = setup.cli(&[command, "ledger"]);
        assert!(!output.status.success());
        assert_eq!(
            stderr(&output).trim_end(),
            "hotswap: module 'ledger' is not configured; add a [[module]] entry for it",
            "{command}"
        );
    }
}
