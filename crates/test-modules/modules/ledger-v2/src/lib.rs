//! `ledger` 2.0.0: the typed module of issue 8, exactly as the issue writes
//! it (from `use` to the end of the impl block), so that it is shown to
//! compile and run. `crates/module/tests/outside_crate.rs` builds this same
//! file in a crate outside the workspace. Its snapshots have layout 2; it
//! migrates layout 1 (`ledger-v1`).

// The types derive no `Debug`; the workspace lint would ask for it.
#![allow(missing_debug_implementations)]

use hotswap_module::{Context, ModuleError, Previous};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Default)]
pub struct Ledger {
    balance: i64,
    history: Vec<Entry>,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct Entry {
    amount: i64,
    note: String,
}

#[derive(Deserialize)]
pub struct Deposit {
    amount: i64,
    #[serde(default)]
    note: String,
}

/// The state layout of version 1.x, kept to read its snapshots.
#[derive(Deserialize)]
struct LedgerV1 {
    balance: i64,
}

#[hotswap_module::module(name = "ledger", version = "2.0.0", layout = 2)]
impl Ledger {
    /// Runs when the previous version's state has another layout; a snapshot
    /// of this layout is decoded directly, and a fresh instance is `Default`.
    fn migrate(previous: Previous<'_>) -> Result<Self, ModuleError> {
        match previous.layout() {
            Some(1) => {
                let old: LedgerV1 = previous.decode()?;
                Ok(Ledger { balance: old.balance, history: Vec::new() })
            }
            other => Err(ModuleError::new(format!("ledger 2 cannot read layout {other:?}"))),
        }
    }

    pub fn deposit(&mut self, ctx: &mut Context, d: Deposit) -> Result<i64, ModuleError> {
        if d.amount <= 0 {
            return Err(ModuleError::new("a deposit must be positive"));
        }
        self.balance += d.amount;
        self.history.push(Entry { amount: d.amount, note: d.note });
        ctx.log(format!("deposit {} -> {}", d.amount, self.balance));
        Ok(self.balance)
    }

    pub fn balance(&self) -> i64 {
        self.balance
    }

    pub fn history(&self, last: Option<usize>) -> Vec<Entry> {
        let n = last.unwrap_or(self.history.len()).min(self.history.len());
        self.history[self.history.len() - n..].to_vec()
    }
}

#[cfg(test)]
mod tests;
