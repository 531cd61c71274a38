//! The module's own tests, through `hotswap_module::testing`: no `.so`, no
//! host, the same code paths the host reaches (`call`, `init`, `snapshot`).

use hotswap_module::testing::Harness;
use hotswap_module::{Level, ModuleError};
use serde::{Deserialize, Serialize};

use super::{Entry, Ledger};

/// Version 1.0.0 as it was, declared here to migrate from. (The attribute
/// leaves the export out of `cargo test` builds, so a second #[module] in
/// the crate is fine here.)
mod v1 {
    use super::*;

    #[derive(Serialize, Deserialize, Default)]
    pub struct Ledger {
        pub balance: i64,
    }

    #[hotswap_module::module(name = "ledger", version = "1.0.0", layout = 1)]
    impl Ledger {
        pub fn deposit(&mut self, amount: i64) -> i64 {
            self.balance += amount;
            self.balance
        }
    }
}

/// What `history` replies.
#[derive(Deserialize, Debug, PartialEq)]
struct Seen {
    amount: i64,
    note: String,
}

#[test]
fn deposits_decode_their_json_and_are_logged() -> Result<(), ModuleError> {
    let mut ledger = Harness::<Ledger>::new()?;
    assert_eq!(ledger.call("deposit", br#"{"amount": 5, "note": "first"}"#)?, b"5");
    assert_eq!(ledger.call("deposit", br#"{"amount": 7}"#)?, b"12", "`note` has a default");
    let logs: Vec<_> = ledger.recorder().logs.iter().map(|log| (log.level, log.message.as_str())).collect();
    assert_eq!(logs, [(Level::Info, "deposit 5 -> 5"), (Level::Info, "deposit 7 -> 12")]);
    assert_eq!(ledger.call_json::<i64>("balance", &())?, 12);
    Ok(())
}

#[test]
fn an_empty_payload_is_null_for_an_option_argument() -> Result<(), ModuleError> {
    let mut ledger = Harness::<Ledger>::new()?;
    for amount in [1, 2, 3] {
        ledger.call("deposit", format!(r#"{{"amount": {amount}}}"#).as_bytes())?;
    }
    let all: Vec<Seen> = serde_json::from_slice(&ledger.call("history", b"")?).unwrap();
    assert_eq!(all.len(), 3);
    let last: Vec<Seen> = ledger.call_json("history", &Some(1))?;
    assert_eq!(last, [Seen { amount: 3, note: String::new() }]);
    Ok(())
}

#[test]
fn refusals_leave_the_state_as_it_was() -> Result<(), ModuleError> {
    let mut ledger = Harness::<Ledger>::new()?;
    ledger.call("deposit", br#"{"amount": 10}"#)?;
    let refused = ledger.call("deposit", br#"{"amount": -1}"#).unwrap_err();
    assert_eq!(refused.message(), "a deposit must be positive");
    let refused = ledger.call("deposit", br#"{"sum": 1}"#).unwrap_err();
    assert_eq!(
        refused.message(),
        "deposit: the payload is not a Deposit: missing field `amount` at line 1 column 10; \
         send JSON like {\"amount\": .., \"note\": ..}"
    );
    let refused = ledger.call("withdraw", b"1").unwrap_err();
    assert_eq!(
        refused.message(),
        "ledger has no method \"withdraw\"; its methods are deposit, balance, history"
    );
    assert_eq!(ledger.state().balance, 10);
    assert_eq!(ledger.state().history.len(), 1);
    Ok(())
}

#[test]
fn a_layout_1_ledger_migrates_with_its_balance_and_no_history() -> Result<(), ModuleError> {
    let mut old = v1::Ledger::default();
    old.deposit(40);
    let mut ledger = Harness::<Ledger>::migrate_from(&old)?;
    assert_eq!(ledger.state().balance, 40);
    assert!(ledger.state().history.is_empty());
    assert_eq!(ledger.call("deposit", br#"{"amount": 2}"#)?, b"42");
    Ok(())
}

#[test]
fn a_layout_2_snapshot_comes_back_as_it_was() -> Result<(), ModuleError> {
    let mut ledger = Harness::<Ledger>::new()?;
    ledger.call("deposit", br#"{"amount": 3, "note": "kept"}"#)?;
    let again = Harness::<Ledger>::from_snapshot("ledger", "2.0.0", &ledger.snapshot()?)?;
    assert_eq!(again.state().balance, 3);
    let Entry { amount, note } = again.state().history[0].clone();
    assert_eq!((amount, note.as_str()), (3, "kept"));
    Ok(())
}

#[test]
fn a_snapshot_migrate_cannot_read_is_refused() {
    let raw = Harness::<Ledger>::from_snapshot("ledger", "0.1.0", &7i64.to_le_bytes()).unwrap_err();
    assert_eq!(raw.message(), "ledger 2 cannot read layout None");
}
