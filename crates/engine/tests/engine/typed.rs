//! Typed modules (`#[hotswap_module::module]`) as a host sees them: JSON
//! arguments and replies, refusals, declared methods, a layout migration
//! at a swap, and `ctx.log` reaching the host's log.

use std::sync::{Arc, Mutex};

use hotswap::{CallError, Engine, Fault, SwapError};
use hotswap_test_modules::{LEDGER_V1, LEDGER_V2};

use crate::engine_in;

fn call(engine: &Engine, instance: &str, method: &str, payload: &str) -> Result<String, CallError> {
    engine.call("ledger", instance, method, payload.as_bytes()).map(|reply| String::from_utf8(reply).unwrap())
}

fn ok(engine: &Engine, instance: &str, method: &str, payload: &str) -> String {
    call(engine, instance, method, payload)
        .unwrap_or_else(|error| panic!("{method}({payload}) failed: {error}"))
}

/// The message of a refusal; panics on a reply or another error.
fn refusal(engine: &Engine, instance: &str, method: &str, payload: &str) -> String {
    match call(engine, instance, method, payload) {
        Err(CallError::Refused { message, method: refused, .. }) => {
            assert_eq!(refused, method);
            message
        }
        other => panic!("{method}({payload}) was not refused: {other:?}"),
    }
}

#[test]
fn typed_methods_decode_json_arguments_and_reply_json() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("ledger", LEDGER_V2).unwrap();

    assert_eq!(ok(&engine, "alice", "deposit", r#"{"amount": 5, "note": "rent"}"#), "5");
    assert_eq!(ok(&engine, "alice", "deposit", r#"{"amount": 7}"#), "12", "note has a default");
    assert_eq!(ok(&engine, "alice", "balance", ""), "12");
    // An Option argument: an empty payload is null (all), or a number.
    assert_eq!(ok(&engine, "alice", "history", ""), r#"[{"amount":5,"note":"rent"},{"amount":7,"note":""}]"#);
    assert_eq!(ok(&engine, "alice", "history", "1"), r#"[{"amount":7,"note":""}]"#);
    assert_eq!(ok(&engine, "alice", "history", "null"), ok(&engine, "alice", "history", ""));
}

#[test]
fn a_unit_argument_needs_no_payload() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("ledger", LEDGER_V1).unwrap();
    assert_eq!(ok(&engine, "bob", "deposit", "9"), "9");
    assert_eq!(ok(&engine, "bob", "reset", ""), "9");
    assert_eq!(ok(&engine, "bob", "reset", "null"), "0");
    let message = refusal(&engine, "bob", "reset", "1");
    assert!(message.starts_with("reset: the payload is not a (): invalid type: integer `1`"), "{message}");
}

#[test]
fn an_err_is_a_refusal_with_its_message_and_keeps_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("ledger", LEDGER_V2).unwrap();
    ok(&engine, "alice", "deposit", r#"{"amount": 3}"#);
    assert_eq!(refusal(&engine, "alice", "deposit", r#"{"amount": -3}"#), "a deposit must be positive");
    assert_eq!(ok(&engine, "alice", "balance", ""), "3");

    let v1 = tempfile::tempdir().unwrap();
    let engine = engine_in(v1.path());
    engine.load("ledger", LEDGER_V1).unwrap();
    ok(&engine, "carol", "deposit", "4");
    // An `Err(String)`, from a method that also takes the context.
    assert_eq!(
        refusal(&engine, "carol", "withdraw", "5"),
        "insufficient funds: the balance is 4, 5 was asked"
    );
    assert_eq!(ok(&engine, "carol", "withdraw", "3"), "1");
}

#[test]
fn a_payload_that_does_not_decode_is_refused_naming_the_method_and_the_expected_type() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("ledger", LEDGER_V2).unwrap();
    assert_eq!(
        refusal(&engine, "alice", "deposit", "{}"),
        "deposit: the payload is not a Deposit: missing field `amount` at line 1 column 2; \
         send JSON like {\"amount\": .., \"note\": ..}"
    );
    // An empty payload is null, which is not a Deposit either.
    let message = refusal(&engine, "alice", "deposit", "");
    assert!(message.starts_with("deposit: the payload is not a Deposit: invalid type: null"), "{message}");
    // Not JSON at all, and not UTF-8.
    let message = refusal(&engine, "alice", "history", "last three");
    assert!(message.starts_with("history: the payload is not an Option<usize>: "), "{message}");
    assert!(message.ends_with("; send JSON like 0"), "{message}");
    let bytes = engine.call("ledger", "alice", "deposit", &[0xff, 0xfe]).unwrap_err();
    assert!(
        matches!(&bytes, CallError::Refused { message, .. } if message.starts_with("deposit: ")),
        "{bytes}"
    );
    assert_eq!(ok(&engine, "alice", "history", ""), "[]", "nothing was deposited");

    let v1 = tempfile::tempdir().unwrap();
    let engine = engine_in(v1.path());
    engine.load("ledger", LEDGER_V1).unwrap();
    let message = refusal(&engine, "bob", "deposit", r#""five""#);
    assert!(
        message.starts_with("deposit: the payload is not an i64: invalid type: string \"five\""),
        "{message}"
    );
}

#[test]
fn an_unknown_method_is_refused_with_the_list_of_methods() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("ledger", LEDGER_V2).unwrap();
    assert_eq!(
        refusal(&engine, "alice", "withdraw", "1"),
        "ledger has no method \"withdraw\"; its methods are deposit, balance, history"
    );
}

#[test]
fn methods_that_take_self_by_reference_are_declared_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("ledger", LEDGER_V2).unwrap();
    let status = engine.status();
    let current = &status.module("ledger").unwrap().current;
    let methods: Vec<(&str, bool)> =
        current.methods.iter().map(|method| (method.name.as_str(), method.read_only)).collect();
    assert_eq!(methods, [("deposit", false), ("balance", true), ("history", true)]);
    assert_eq!(current.state_layout, Some(2));
}

#[test]
fn a_swap_from_layout_1_to_layout_2_migrates_every_balance() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("ledger", LEDGER_V1).unwrap();
    let accounts = [("alice", 10), ("bob", 0), ("carol", -5)];
    for (account, amount) in accounts {
        ok(&engine, account, "deposit", &amount.to_string());
    }

    let report = engine.load("ledger", LEDGER_V2).unwrap();
    assert_eq!((report.from_version.as_deref(), report.to_version.as_str()), (Some("1.0.0"), "2.0.0"));
    assert_eq!(report.instances, 3);
    for (account, amount) in accounts {
        assert_eq!(ok(&engine, account, "balance", ""), amount.to_string(), "{account}");
        assert_eq!(ok(&engine, account, "history", ""), "[]", "{account}: v1 kept no history");
    }
    assert_eq!(ok(&engine, "alice", "deposit", r#"{"amount": 1}"#), "11");
}

#[test]
fn a_swap_to_a_version_without_migrate_is_refused_naming_both_layouts_and_nothing_moves() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("ledger", LEDGER_V2).unwrap();
    ok(&engine, "alice", "deposit", r#"{"amount": 8, "note": "kept"}"#);
    ok(&engine, "bob", "deposit", r#"{"amount": 2}"#);

    // Version 1 keeps layout 1 and has no `migrate` to read layout 2.
    let error = engine.load("ledger", LEDGER_V1).unwrap_err();
    match &error {
        SwapError::MigrationFailed { from_version, to_version, fault: Fault::Error(message), .. } => {
            assert_eq!((from_version.as_str(), to_version.as_str()), ("2.0.0", "1.0.0"));
            assert_eq!(
                &**message,
                "ledger 1.0.0 keeps layout 1 and has no `migrate` to read layout 2 from ledger 2.0.0: \
                 add `fn migrate(previous: Previous<'_>) -> Result<Self, ModuleError>` to the #[module] impl"
            );
        }
        other => panic!("not refused as a migration: {other:?}"),
    }
    assert_eq!(engine.status().module("ledger").unwrap().current.version, "2.0.0");
    assert_eq!(ok(&engine, "alice", "history", ""), r#"[{"amount":8,"note":"kept"}]"#);
    assert_eq!(ok(&engine, "bob", "balance", ""), "2");
}

/// A log event the host emitted: its message and fields.
#[derive(Debug, Clone, PartialEq)]
struct Logged {
    level: tracing::Level,
    fields: Vec<(String, String)>,
}

/// Keeps every event sent on the thread it is the default of.
struct Capture(Arc<Mutex<Vec<Logged>>>);

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(Vec<(String, String)>);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push((field.name().to_owned(), format!("{value:?}")));
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.push((field.name().to_owned(), value.to_owned()));
            }
        }
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        fields.0.sort();
        self.0.lock().unwrap().push(Logged { level: *event.metadata().level(), fields: fields.0 });
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn ctx_log_reaches_the_hosts_log_with_module_version_instance_and_method() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("ledger", LEDGER_V2).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    // Calls run on the caller's thread, so a thread-local subscriber sees them.
    tracing::subscriber::with_default(Capture(events.clone()), || {
        ok(&engine, "alice", "deposit", r#"{"amount": 5}"#);
    });
    let events = events.lock().unwrap();
    let from_module: Vec<&Logged> =
        events.iter().filter(|event| event.fields.iter().any(|(name, _)| name == "module")).collect();
    let expected = [
        ("instance", "alice"),
        ("message", "deposit 5 -> 5"),
        ("method", "deposit"),
        ("module", "ledger"),
        ("target", ""),
        ("version", "2.0.0"),
    ];
    let expected: Vec<(String, String)> =
        expected.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
    assert_eq!(from_module, [&Logged { level: tracing::Level::INFO, fields: expected }], "all: {events:?}");
}

/// A module's `log::info!` and `tracing::info!` (with the SDK's `tracing`
/// feature) reach the host's log like `ctx.log`, with the same fields.
#[test]
fn log_and_tracing_macros_in_a_module_reach_the_hosts_log_with_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("timer", hotswap_test_modules::TIMER_TRACING).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::with_default(Capture(events.clone()), || {
        engine.call("timer", "room", "log", b"hello-5b").unwrap();
    });
    let events = events.lock().unwrap();
    let field = |event: &Logged, name: &str| {
        event.fields.iter().find(|(field, _)| field == name).map(|(_, value)| value.clone())
    };
    let messages: Vec<String> = events.iter().filter_map(|event| field(event, "message")).collect();
    for said in ["ctx.log says hello-5b", "log::info! says hello-5b", "tracing::info! says hello-5b"] {
        let event = events
            .iter()
            .find(|event| field(event, "message").as_deref() == Some(said))
            .unwrap_or_else(|| panic!("{said:?} did not reach the host: {messages:?}"));
        for (name, value) in
            [("module", "timer"), ("version", "1.0.0"), ("instance", "room"), ("method", "log")]
        {
            assert_eq!(field(event, name).as_deref(), Some(value), "{said}: {event:?}");
        }
        assert_eq!(event.level, tracing::Level::INFO, "{said}");
    }
}
