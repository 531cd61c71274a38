//! The `#[module]` attribute of `hotswap-module`. Use it as
//! `hotswap_module::module`; this crate is an implementation detail.

use proc_macro::TokenStream;

mod args;
mod expand;
#[cfg(test)]
mod hook_tests;
mod hooks;
mod methods;
#[cfg(test)]
mod tests;

/// Makes a module of a state type's `impl` block: its `pub fn`s become the
/// methods callers reach by name, with JSON arguments and replies, and its
/// state is snapshotted and restored for you.
///
/// ```
/// use hotswap_module::{Context, ModuleError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Default)]
/// pub struct Counter {
///     total: u64,
/// }
///
/// #[derive(Deserialize)]
/// pub struct Add {
///     amount: u64,
/// }
///
/// #[hotswap_module::module(name = "counter", version = "1.0.0", layout = 1)]
/// impl Counter {
///     /// `POST /call/counter/add` with `{"amount": 5}` replies `5`.
///     pub fn add(&mut self, ctx: &mut Context, add: Add) -> Result<u64, ModuleError> {
///         self.total = self.total.checked_add(add.amount).ok_or("the total would overflow")?;
///         ctx.log(format!("total {}", self.total));
///         Ok(self.total)
///     }
///
///     /// Read-only: `&self`. An empty payload is fine, there is no argument.
///     pub fn total(&self) -> u64 {
///         self.total
///     }
/// }
/// # fn main() {}
/// ```
///
/// # The attribute
///
/// `name` (a string literal), `version` (a string literal or a constant
/// expression such as `env!("CARGO_PKG_VERSION")`) and `layout` (a number,
/// 1 or more) are all required. `layout` is the layout of the state's
/// snapshots: give the next number whenever the state type changes, and
/// read the old layout in `migrate`.
///
/// # What becomes what
///
/// * **The state** is the impl block's type. It must be `Serialize`,
///   `DeserializeOwned` and `Default`: a fresh instance is `Default`, a
///   snapshot is the state encoded in the SDK's envelope (which records
///   `layout`), and a snapshot of the same layout is decoded straight back.
/// * **`fn migrate(previous: Previous<'_>) -> Result<Self, ModuleError>`**,
///   optional, runs when the previous version's snapshot has another layout
///   (or none: a raw module's). Without it such a swap is refused, with a
///   message that names both layouts and says to add `migrate`.
/// * **Each `pub fn`** taking `&self` or `&mut self` is a method named like
///   the function. `&self` methods are declared read-only to the host.
///   After `self` comes an optional `ctx: &mut Context` (the host's clocks,
///   log, timers and the instance key), then at most one argument of any
///   `DeserializeOwned` type, decoded from the payload as JSON. An empty
///   payload is JSON `null`, so `Option<T>` and `()` arguments can be sent
///   with no body at all; a method without an argument ignores the payload.
/// * **The return value** is encoded as JSON into the host's reply buffer
///   (no return type replies `null`). A return type named `Result` (with an
///   `Err` that is `Display`) makes `Err` a refusal with that message (the
///   daemon answers 422); `Ok` is encoded as JSON.
/// * **Session hooks**: functions named `on_join`, `on_message`, `on_leave`
///   and `on_tick` (any visibility) are never methods; they become the
///   `Module` trait's hooks of those names, run by a host with sessions
///   (WebSocket clients). After `self` (`&mut self` or `&self`) and an
///   optional `ctx: &mut Context`:
///   `on_join(session: Session, request: R)` (`request` optional),
///   `on_message(session: Session, message: M)`, `on_leave(session: Session)`,
///   `on_tick()`. `R` and `M` are `&[u8]` (as they came), `&str` (UTF-8,
///   else refused) or any `DeserializeOwned` type: a join request is the
///   query string the client connected with (`?name=ann&level=3`, read by
///   field name, so a struct gets its parameters with numbers parsed), a
///   message is JSON. Each returns nothing or `Result<(), E: Display>`: an
///   `Err` from `on_join` refuses the session with that message, from
///   `on_message` or `on_tick` it is reported to the host, from `on_leave`
///   (which cannot be refused) it is logged as a warning. A request or
///   message that does not decode is refused the same way, naming the
///   expected type (`on_message: the message is not a Say: missing field
///   `text` ..`). A hook left out keeps the trait's default: a join is
///   accepted, a message ignored.
/// * **Other functions** (private or `pub(crate)`) are left alone: helpers.
///
/// Refusals the generated code makes: a payload that does not decode names
/// the method, the expected type, serde's reason and, where it can, an
/// example (`deposit: the payload is not a Deposit: missing field `amount`
/// at line 1 column 2; send JSON like {"amount": .., "note": ..}`); an
/// unknown method lists the methods there are.
///
/// The attribute also implements `Module::handle` (for hosts of the older,
/// byte-only kind: it runs the method with a [`Recorder`] as its context, so
/// what it logs or schedules goes nowhere) and exports the module, as
/// `export_module!` does: one `#[module]` per crate. The export is left out
/// of the crate's own `cargo test` build, so its tests may declare other
/// `#[module]` types, such as the previous version to migrate from.
///
/// [`Recorder`]: https://docs.rs/hotswap-module/latest/hotswap_module/struct.Recorder.html
///
/// # Compile errors
///
/// Each points at what is wrong: `name`, `version` or `layout` missing or
/// given twice, an unknown key, `layout = 0`; a generic state type or a trait
/// impl; a `pub fn` without `self`, with `self` by value or a typed
/// receiver, `async`, `unsafe` or generic over types; a method that takes two
/// arguments, or the context anywhere but first or not as `&mut Context`;
/// a method named `init`, `handle`, `call` or `snapshot`; a `migrate` that is
/// async, takes `self` or takes other than one argument; a session hook of
/// another shape (no session, the context later, an extra argument, a
/// reply type, `self` by value, `async`, `unsafe`, generic). A state, argument or
/// reply type without the serde traits it needs is reported at that type.
#[proc_macro_attribute]
pub fn module(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(attr.into(), item.into()).into()
}

/// Each of these must fail to compile; `tests.rs` checks the message each
/// refusal gives, these check that it really stops the build.
///
/// A method with two arguments:
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, Default)] pub struct S;
/// #[hotswap_module::module(name = "s", version = "1", layout = 1)]
/// impl S {
///     pub fn add(&mut self, a: u32, b: u32) {}
/// }
/// # fn main() {}
/// ```
/// A method named like one of the trait's functions:
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, Default)] pub struct S;
/// #[hotswap_module::module(name = "s", version = "1", layout = 1)]
/// impl S {
///     pub fn snapshot(&self) {}
/// }
/// # fn main() {}
/// ```
/// No name:
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, Default)] pub struct S;
/// #[hotswap_module::module(version = "1", layout = 1)]
/// impl S {}
/// # fn main() {}
/// ```
/// No version:
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, Default)] pub struct S;
/// #[hotswap_module::module(name = "s", layout = 1)]
/// impl S {}
/// # fn main() {}
/// ```
/// No layout:
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, Default)] pub struct S;
/// #[hotswap_module::module(name = "s", version = "1")]
/// impl S {}
/// # fn main() {}
/// ```
/// Layout 0:
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, Default)] pub struct S;
/// #[hotswap_module::module(name = "s", version = "1", layout = 0)]
/// impl S {}
/// # fn main() {}
/// ```
/// `self` by value:
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, Default)] pub struct S;
/// #[hotswap_module::module(name = "s", version = "1", layout = 1)]
/// impl S {
///     pub fn consume(self) {}
/// }
/// # fn main() {}
/// ```
/// An async method:
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, Default)] pub struct S;
/// #[hotswap_module::module(name = "s", version = "1", layout = 1)]
/// impl S {
///     pub async fn wait(&self) {}
/// }
/// # fn main() {}
/// ```
/// A state that is not `Default`:
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)] pub struct S;
/// #[hotswap_module::module(name = "s", version = "1", layout = 1)]
/// impl S {}
/// # fn main() {}
/// ```
/// A session hook without the session:
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// # use hotswap_module::Context;
/// # #[derive(Serialize, Deserialize, Default)] pub struct S;
/// #[hotswap_module::module(name = "s", version = "1", layout = 1)]
/// impl S {
///     fn on_message(&mut self, ctx: &mut Context, message: &str) {}
/// }
/// # fn main() {}
/// ```
/// A session hook that returns a value:
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, Default)] pub struct S;
/// #[hotswap_module::module(name = "s", version = "1", layout = 1)]
/// impl S {
///     fn on_tick(&mut self) -> u64 { 0 }
/// }
/// # fn main() {}
/// ```
/// A session hook whose `Ok` is not `()`:
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// # use hotswap_module::Session;
/// # #[derive(Serialize, Deserialize, Default)] pub struct S;
/// #[hotswap_module::module(name = "s", version = "1", layout = 1)]
/// impl S {
///     fn on_join(&mut self, session: Session) -> Result<u64, String> { Ok(0) }
/// }
/// # fn main() {}
/// ```
/// A message type that is not `Deserialize`:
/// ```compile_fail
/// # use serde::{Deserialize, Serialize};
/// # use hotswap_module::Session;
/// # #[derive(Serialize, Deserialize, Default)] pub struct S;
/// pub struct Say;
/// #[hotswap_module::module(name = "s", version = "1", layout = 1)]
/// impl S {
///     fn on_message(&mut self, session: Session, say: Say) {}
/// }
/// # fn main() {}
/// ```
/// And the same module with none of these faults compiles:
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use hotswap_module::{Context, Session};
/// # #[derive(Serialize, Deserialize, Default)] pub struct S;
/// #[hotswap_module::module(name = "s", version = "1", layout = 1)]
/// impl S {
///     pub fn add(&mut self, ab: (u32, u32)) -> u32 { ab.0 + ab.1 }
///     pub fn consume(&self) {}
///     fn helper(self) {}
///     fn on_join(&mut self, session: Session) -> Result<(), String> { Ok(()) }
///     fn on_message(&mut self, ctx: &mut Context, session: Session, message: &str) {}
///     fn on_tick(&mut self) {}
/// }
/// # fn main() {}
/// ```
#[cfg(doctest)]
mod compile_errors {}
