//! `hotswap load NAME PATH --dry-run` and `"dry_run": true` on the admin
//! API: the report of what the swap would do, and nothing changed; and a
//! module of the old ABI refused with how to rebuild it.

use crate::{COUNTER_CONFIG, Setup, json, modules, stderr, stdout};

/// The daemon still serves v1 with `lobby` at `total`, no swap made.
fn assert_untouched(daemon: &crate::Daemon, total: &str) {
    assert_eq!(daemon.version(), "1.0.0");
    assert_eq!(daemon.text("GET", "/total", ""), total);
    let status = daemon.status();
    assert_eq!(status["modules"][0]["swaps"], 0);
    assert_eq!(status["modules"][0]["last_error"], serde_json::Value::Null);
}

#[test]
fn a_dry_run_reports_the_swap_and_changes_nothing() {
    let setup = Setup::new(&COUNTER_CONFIG.replace("watch = true", "watch = false"));
    let v2 = setup.install(modules::COUNTER_V2, "libcounter_v2.so");
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "10");
    daemon.text("POST", "/call/counter/add?instance=zoe", "1");

    // The CLI, for a person.
    let output = setup.cli(&["load", "counter", v2.to_str().unwrap(), "--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("dry run of counter 1.0.0 -> 2.0.0 from "), "{text}");
    assert!(text.contains("state layout none declared"), "{text}");
    assert!(
        text.contains("2 live instance(s): 2 would migrate, 0 refused; snapshots 16 bytes now, 32"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("a swap would go through; nothing was changed"), "{text}");
    assert_untouched(&daemon, "10");

    // The admin API: JSON, with every refusal in full.
    daemon.text("POST", "/call/counter/corrupt-snapshot?instance=zoe", "");
    let body = format!("{{\"path\": {:?}, \"dry_run\": true}}", v2.to_str().unwrap());
    let (status, reply) = daemon.admin("POST", "/v1/modules/counter/load", body.as_bytes()).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    let report = json(&reply);
    assert_eq!(
        (report["running_version"].as_str(), report["trial_version"].as_str()),
        (Some("1.0.0"), Some("2.0.0"))
    );
    // lobby, zoe, and the instance `daemon.version()` asked.
    let counts = ["instances", "migrated", "refused"].map(|count| report[count].as_u64().unwrap());
    assert_eq!(counts, [3, 2, 1], "{report}");
    assert_eq!(report["would_swap"], false);
    assert_eq!(report["refusals"][0]["instance"], "zoe");
    let reason = report["refusals"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("cannot migrate a 7-byte snapshot from counter 1.0.0"), "{reason}");
    assert_eq!(report["trial_code_unmapped"], true);

    // --json prints that document; the text names the refused instance.
    let output = setup.cli(&["load", "counter", v2.to_str().unwrap(), "--dry-run", "--json"]);
    assert_eq!(json(&output.stdout)["refusals"][0]["instance"], "zoe", "{}", stderr(&output));
    assert!(!output.status.success(), "with --json too, the report being the whole answer");
    let output = setup.cli(&["load", "counter", v2.to_str().unwrap(), "--dry-run"]);
    assert!(!output.status.success(), "a dry run whose swap would be refused fails, for `&& hotswap load`");
    assert!(stderr(&output).contains("the swap of counter would be refused"), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("refused: instance 'zoe': the new version's init returned an error: "), "{text}");
    assert!(text.trim_end().ends_with("a swap would be refused; nothing was changed"), "{text}");
    assert_untouched(&daemon, "10");
    assert!(daemon.log().contains("dry run of counter 1.0.0 -> 2.0.0"), "the daemon logs the report");
}

/// A file the load policy or the pinned sha256 refuses is refused for a
/// dry run as for a swap.
#[test]
fn a_dry_run_is_refused_where_the_swap_would_be() {
    let v1_hash = crate::admin::sha256_hex(&std::fs::read(modules::COUNTER_V1).unwrap());
    let config = COUNTER_CONFIG.replace("watch = true", &format!("watch = false\nsha256 = \"{v1_hash}\""));
    let setup = Setup::new(&config);
    let v2 = setup.install(modules::COUNTER_V2, "libcounter_v2.so");
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "3");
    let output = setup.cli(&["load", "counter", v2.to_str().unwrap(), "--dry-run"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains(&format!("the config expects {v1_hash}")), "{}", stderr(&output));
    let outside = tempfile::tempdir().unwrap();
    let elsewhere = outside.path().join("libcounter_v2.so");
    std::fs::copy(modules::COUNTER_V2, &elsewhere).unwrap();
    let body = format!("{{\"path\": {:?}, \"dry_run\": true}}", elsewhere.to_str().unwrap());
    let (status, reply) = daemon.admin("POST", "/v1/modules/counter/load", body.as_bytes()).unwrap();
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&reply));
    assert_untouched(&daemon, "3");
}

/// A module built for ABI 1: `hotswap load` says to rebuild it with the SDK
/// of this host, and v1 keeps serving.
#[test]
fn loading_a_module_of_the_old_abi_says_to_rebuild_it() {
    let setup = Setup::new(COUNTER_CONFIG);
    let old = setup.install(modules::COUNTER_ABI_V1, "libcounter_abi1.so");
    let daemon = setup.start();
    daemon.text("POST", "/call/counter/add?instance=lobby", "7");
    for dry_run in [false, true] {
        let mut args = vec!["load", "counter", old.to_str().unwrap()];
        args.extend(dry_run.then_some("--dry-run"));
        let output = setup.cli(&args);
        assert!(!output.status.success(), "dry run {dry_run}");
        let message = stderr(&output);
        assert!(message.contains("was built for ABI 1, this host runs ABI "), "{message}");
        assert!(message.contains("rebuild the module with hotswap-module "), "{message}");
    }
    assert_eq!(daemon.version(), "1.0.0");
    assert_eq!(daemon.text("GET", "/total", ""), "7");
}
