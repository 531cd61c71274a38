//! Issue 8's "done when" through the daemon: the README's typed ledger,
//! served from the README's own config, answers `curl -d '{"amount": 5}'`,
//! refuses bad bodies and `Err`s with 422, and migrates from its layout-1
//! version after a dry run that shows the plan and changes nothing.

use crate::{Daemon, Setup, json, modules, stderr, stdout};

const README: &str = include_str!("../../README.md");
const LEDGER_V2_SOURCE: &str = include_str!("../../crates/test-modules/modules/ledger-v2/src/lib.rs");

/// The accounts the tests fill, with what version 1 deposits on each.
const ACCOUNTS: [(&str, i64); 3] = [("alice", 5), ("bob", 7), ("carol", 11)];

/// The body of the first fenced block of kind `kind` in the README section
/// headed `heading`.
fn readme_block(heading: &str, kind: &str) -> &'static str {
    let section = README.split_once(&format!("\n{heading}\n")).map(|(_, rest)| rest);
    let section = section.unwrap_or_else(|| panic!("README has no section {heading:?}"));
    let section = section.split("\n## ").next().unwrap_or(section);
    let block = section.split_once(&format!("```{kind}\n")).map(|(_, rest)| rest);
    let block = block.unwrap_or_else(|| panic!("README's {heading:?} has no ```{kind} block"));
    block.split_once("```").map_or(block, |(body, _)| body)
}

/// The README's daemon config, on a free port.
fn readme_config() -> String {
    let shipped = readme_block("## Run the daemon", "toml");
    let config = shipped.replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"");
    assert_ne!(config, shipped, "the test moves the README's config to a free port");
    config
}

/// `(status, body as text)` of one request.
fn request(daemon: &Daemon, method: &str, path: &str, body: &str) -> (u16, String) {
    let (status, reply) = daemon.http(method, path, body.as_bytes());
    (status, String::from_utf8(reply).expect("a UTF-8 reply"))
}

/// The message of a 422 `{"error": ...}`; panics on another answer.
fn refusal(daemon: &Daemon, path: &str, body: &str) -> String {
    let (status, reply) = request(daemon, "POST", path, body);
    assert_eq!(status, 422, "POST {path} {body}: {reply}");
    json(reply.as_bytes())["error"].as_str().expect("an error message").to_owned()
}

/// Every account's balance, by the README's `GET /balance` route.
fn balances(daemon: &Daemon) -> Vec<String> {
    ACCOUNTS.iter().map(|(who, _)| daemon.text("GET", &format!("/balance?instance={who}"), "")).collect()
}

#[test]
fn the_readme_module_is_ledger_v2_word_for_word() {
    let shown = readme_block("## Write a module", "rust");
    assert!(shown.contains("#[hotswap_module::module(name = \"ledger\", version = \"2.0.0\", layout = 2)]"));
    assert!(
        LEDGER_V2_SOURCE.contains(shown),
        "README's module differs from crates/test-modules/modules/ledger-v2/src/lib.rs; keep them identical"
    );
}

#[test]
fn the_readme_ledger_serves_json_refuses_with_422_and_migrates_after_a_dry_run() {
    let setup = Setup::new(&readme_config());
    // Version 1 (layout 1, a balance only) serves first, where the README's module will go.
    setup.install(modules::LEDGER_V1, "libledger.so");
    let v2 = setup.install(modules::LEDGER_V2, "libledger_v2.so");
    let daemon = setup.start();

    // Version 1's deposit takes a bare number: `{"amount": 5}` is not one.
    for (who, amount) in ACCOUNTS {
        let path = format!("/deposit?instance={who}");
        let refused = refusal(&daemon, &path, r#"{"amount": 5}"#);
        assert!(
            refused.starts_with(
                "ledger 1.0.0 refused 'deposit': deposit: the payload is not an i64: invalid type: map"
            ),
            "{refused}"
        );
        assert!(refused.ends_with("; send JSON like 0"), "{refused}");
        assert_eq!(daemon.text("POST", &path, &amount.to_string()), amount.to_string());
    }
    // An `Err` from a method is 422 with its message, and changes nothing.
    assert_eq!(
        refusal(&daemon, "/call/ledger/withdraw?instance=bob", "8"),
        "ledger 1.0.0 refused 'withdraw': insufficient funds: the balance is 7, 8 was asked"
    );
    assert_eq!(
        refusal(&daemon, "/call/ledger/history?instance=alice", ""),
        "ledger 1.0.0 refused 'history': ledger has no method \"history\"; \
         its methods are deposit, withdraw, reset, balance"
    );
    assert_eq!(balances(&daemon), ["5", "7", "11"]);

    // The dry run shows the plan, for a person and as JSON, and changes nothing.
    let v2 = v2.to_str().unwrap();
    let output = setup.cli(&["load", "ledger", v2, "--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("dry run of ledger 1.0.0 -> 2.0.0 from "), "{text}");
    assert!(text.contains(": state layout 1 -> 2\n"), "{text}");
    assert!(text.contains("\n3 live instance(s): 3 would migrate, 0 refused; "), "{text}");
    assert!(text.trim_end().ends_with("a swap would go through; nothing was changed"), "{text}");
    let output = setup.cli(&["load", "ledger", v2, "--dry-run", "--json"]);
    let report = json(&output.stdout);
    assert_eq!((report["running_layout"].as_u64(), report["trial_layout"].as_u64()), (Some(1), Some(2)));
    assert_eq!((report["instances"].as_u64(), report["migrated"].as_u64()), (Some(3), Some(3)), "{report}");
    assert_eq!(report["would_swap"], true, "{report}");
    let ledger = &daemon.status()["modules"][0];
    assert_eq!((ledger["name"].as_str(), ledger["version"].as_str()), (Some("ledger"), Some("1.0.0")));
    assert_eq!(ledger["swaps"], 0);
    assert_eq!(balances(&daemon), ["5", "7", "11"]);
    assert_eq!(daemon.http("POST", "/call/ledger/history?instance=alice", b"").0, 422, "still version 1");

    // The swap itself: every balance is kept, and `history` exists.
    let output = setup.cli(&["load", "ledger", v2]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).starts_with("swapped ledger 1.0.0 -> 2.0.0 in "), "{}", stdout(&output));
    assert!(stdout(&output).contains(": 3 instance(s) migrated"), "{}", stdout(&output));
    assert_eq!(daemon.status()["modules"][0]["version"], "2.0.0");
    assert_eq!(balances(&daemon), ["5", "7", "11"]);
    assert_eq!(daemon.text("POST", "/call/ledger/history?instance=alice", ""), "[]", "v1 kept no history");

    // Version 2 takes exactly what `curl -d '{"amount": 5}'` sends.
    assert_eq!(daemon.text("POST", "/deposit?instance=alice", r#"{"amount": 5}"#), "10");
    assert_eq!(daemon.text("POST", "/deposit?instance=alice", r#"{"amount": 2, "note": "tip"}"#), "12");
    assert_eq!(
        refusal(&daemon, "/deposit?instance=bob", r#"{"amount": -5}"#),
        "ledger 2.0.0 refused 'deposit': a deposit must be positive"
    );
    assert_eq!(
        refusal(&daemon, "/deposit?instance=bob", r#"{"sum": 5}"#),
        "ledger 2.0.0 refused 'deposit': deposit: the payload is not a Deposit: missing field `amount` \
         at line 1 column 10; send JSON like {\"amount\": .., \"note\": ..}"
    );
    assert_eq!(balances(&daemon), ["12", "7", "11"]);
    assert_eq!(
        daemon.text("POST", "/call/ledger/history?instance=alice", ""),
        r#"[{"amount":5,"note":""},{"amount":2,"note":"tip"}]"#
    );
    assert_eq!(
        daemon.text("POST", "/call/ledger/history?instance=alice", "1"),
        r#"[{"amount":2,"note":"tip"}]"#
    );
    assert_eq!(
        daemon.text("POST", "/call/ledger/history?instance=bob", ""),
        "[]",
        "refusals recorded nothing"
    );
}
