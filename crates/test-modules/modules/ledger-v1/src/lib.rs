//! `ledger` 1.0.0, typed: a balance (layout 1), the methods `deposit`,
//! `withdraw`, `reset` and `balance`. Version 2.0.0 (`ledger-v2`) migrates
//! its snapshots.

use hotswap_module::{Context, ModuleError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct Ledger {
    balance: i64,
}

#[hotswap_module::module(name = "ledger", version = "1.0.0", layout = 1)]
impl Ledger {
    /// A bare number: `5`.
    pub fn deposit(&mut self, amount: i64) -> Result<i64, ModuleError> {
        self.balance = self.balance.checked_add(amount).ok_or("the balance would overflow")?;
        Ok(self.balance)
    }

    /// A refusal as a `String`, with the context first.
    pub fn withdraw(&mut self, ctx: &mut Context, amount: i64) -> Result<i64, String> {
        if amount > self.balance {
            return Err(format!("insufficient funds: the balance is {}, {amount} was asked", self.balance));
        }
        self.balance -= amount;
        ctx.log(format!("withdraw {amount} on {}", ctx.instance()));
        Ok(self.balance)
    }

    /// A `()` argument: called with no payload (or `null`). Replies with
    /// the balance it cleared.
    pub fn reset(&mut self, (): ()) -> i64 {
        std::mem::take(&mut self.balance)
    }

    pub fn balance(&self) -> i64 {
        self.balance
    }
}
