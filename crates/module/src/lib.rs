//! Write a module that a hotswap host can load, swap and unload while it runs.
//!
//! # What a module gets, and what it promises
//!
//! * **Every entry point is panic-safe.** A panic in `init`, `handle` or
//!   `snapshot` is caught here, inside the module, and reported to the host
//!   as an error; it never unwinds across the `extern "C"` boundary (which
//!   would abort the whole process). Build modules with `panic = "unwind"`
//!   (the default); the host refuses modules built with `panic = "abort"`.
//! * **State moves between versions through bytes.** When a new version
//!   replaces yours, the host asks your [`Module::snapshot`] for the state
//!   and hands it to the new version's [`Module::init`] as [`Previous`].
//!   Migrations between state layouts live in `init`, like Erlang's
//!   `code_change/3`. If `init` returns an error, the swap is refused and
//!   the old version keeps serving with its state untouched.
//! * **Text from the host is checked.** A method name or a previous name or
//!   version that is not valid UTF-8 never reaches your code as a `&str`:
//!   the call (or `init`) is refused with an error saying so.
//! * **Calls to one instance are serialized.** The host owns the state and
//!   gives `handle` exclusive access to it; different instances (keys) run in
//!   parallel on the host's threads.
//! * **A module owns no threads, runtimes or statics.** Its code is unmapped
//!   once the next version takes over, so a thread or task it started would
//!   run freed code, and state kept in a `static` would be lost. Keep all
//!   state in your `Module` value. See `docs/writing-a-module.md`.
//!
//! # Example
//!
//! A `cdylib` crate that depends on `hotswap-module`:
//!
//! ```
//! use hotswap_module::{export_module, Module, ModuleError, Previous};
//!
//! #[derive(Default)]
//! pub struct Ledger {
//!     balance: i64,
//! }
//!
//! impl Module for Ledger {
//!     const NAME: &'static str = "ledger";
//!     const VERSION: &'static str = "1.0.0";
//!
//!     fn init(previous: Option<Previous<'_>>) -> Result<Self, ModuleError> {
//!         let Some(previous) = previous else { return Ok(Ledger::default()) };
//!         let bytes: [u8; 8] = previous.state().try_into().map_err(|_| {
//!             ModuleError::new(format!(
//!                 "cannot read a {}-byte snapshot from {} {}: expected 8 bytes",
//!                 previous.state().len(), previous.name(), previous.version()
//!             ))
//!         })?;
//!         Ok(Ledger { balance: i64::from_le_bytes(bytes) })
//!     }
//!
//!     fn handle(&mut self, method: &str, payload: &[u8]) -> Result<Vec<u8>, ModuleError> {
//!         match method {
//!             "deposit" => {
//!                 let amount: i64 = std::str::from_utf8(payload)
//!                     .ok()
//!                     .and_then(|s| s.trim().parse().ok())
//!                     .ok_or("deposit takes a decimal amount")?;
//!                 self.balance += amount;
//!                 Ok(self.balance.to_string().into_bytes())
//!             }
//!             "balance" => Ok(self.balance.to_string().into_bytes()),
//!             other => Err(ModuleError::new(format!("unknown method {other:?}"))),
//!         }
//!     }
//!
//!     fn snapshot(&self) -> Result<Vec<u8>, ModuleError> {
//!         Ok(self.balance.to_le_bytes().to_vec())
//!     }
//! }
//!
//! export_module!(Ledger);
//! # fn main() {}
//! ```

use std::fmt;

use hotswap_abi::{RawMethod, RawStr};

mod context;
mod entry_points;
mod envelope;
mod json_hint;
#[cfg(feature = "log")]
mod log_bridge;
mod push_json;
mod session;
mod shape;
pub mod testing;
mod typed;
mod typed_sessions;

pub use context::{Context, Level, LogRecord, Now, Recorder, Reply, ScheduledCall};
pub use envelope::EnvelopeError;
pub use hotswap_module_macros::module;
pub use session::{Push, Session};
pub use shape::compat::{Change, Mismatch};

/// A versioned state machine that a hotswap host can run and replace.
///
/// The value of the implementing type *is* the state of one instance.
pub trait Module: Sized + Send + 'static {
    /// Name the host loads this module under. Must stay the same across
    /// versions: the host refuses a file whose `NAME` differs from the
    /// module it is replacing.
    const NAME: &'static str;
    /// Version string, reported by the host and handed to the next version.
    const VERSION: &'static str;

    /// Start an instance: fresh (`None`) or from the previous version's
    /// snapshot (`Some`), which may come from an older or newer version, a
    /// process that restarted, or a snapshot on disk. Migrations live here.
    fn init(previous: Option<Previous<'_>>) -> Result<Self, ModuleError>;

    /// The layout number of this version's snapshots, when it declares one
    /// (the typed layer does, from `#[module(layout = N)]`). The host shows
    /// it and a dry run reports a planned change (`1 → 2`); raw modules leave it `None`.
    const LAYOUT: Option<u32> = None;

    /// The methods this module answers, for the host to list (and to know
    /// which only read the state). A raw module may leave it empty.
    const METHODS: &'static [Method] = &[];

    /// Handle one call. An `Err` is returned to the caller; the state stays
    /// as this method left it.
    fn handle(&mut self, method: &str, payload: &[u8]) -> Result<Vec<u8>, ModuleError>;

    /// Handle one call with the host's services at hand ([`Context`]),
    /// writing the reply into the host's buffer. The host calls this one;
    /// the default runs [`Module::handle`] and writes what it returns, so a
    /// raw module only implements `handle`. The typed layer implements this.
    fn call(
        &mut self,
        ctx: &mut Context,
        method: &str,
        payload: &[u8],
        reply: &mut Reply,
    ) -> Result<(), ModuleError> {
        let _ = ctx;
        reply.push(&self.handle(method, payload)?);
        Ok(())
    }

    /// Serialize the state, for the next version, a new process or disk.
    fn snapshot(&self) -> Result<Vec<u8>, ModuleError>;

    /// A session joined this instance; `request` is the query string of
    /// its request. An `Err` refuses the session with the message (the
    /// daemon closes the WebSocket with code 1008 and it as the reason).
    /// By default every session is accepted.
    ///
    /// The joining session is already a member of the instance while this
    /// runs, so a [`Context::broadcast`] from here reaches it too. What the
    /// hook pushes is delivered whatever it returns: when it refuses, what
    /// it pushed before refusing reaches the others and, before the close,
    /// the refused session itself.
    fn on_join(&mut self, ctx: &mut Context, session: Session, request: &[u8]) -> Result<(), ModuleError> {
        let _ = (ctx, session, request);
        Ok(())
    }

    /// A message from `session`, in the order the client sent them. An `Err`
    /// goes to the host (the daemon closes the session with 1008 and the
    /// message). By default ignored.
    fn on_message(&mut self, ctx: &mut Context, session: Session, message: &[u8]) -> Result<(), ModuleError> {
        let _ = (ctx, session, message);
        Ok(())
    }

    /// `session` left (it closed, its connection broke, or the host closed
    /// it); runs once per session that joined.
    fn on_leave(&mut self, ctx: &mut Context, session: Session) {
        let _ = (ctx, session);
    }

    /// The host's periodic tick of this instance (the daemon's `tick`
    /// setting). By default nothing.
    fn on_tick(&mut self, ctx: &mut Context) -> Result<(), ModuleError> {
        let _ = ctx;
        Ok(())
    }
}

/// The version being replaced: its name, version and snapshot bytes.
#[derive(Debug, Clone, Copy)]
pub struct Previous<'a> {
    name: &'a str,
    version: &'a str,
    state: &'a [u8],
}

impl<'a> Previous<'a> {
    /// Build one by hand, for testing a migration without a host.
    pub fn new(name: &'a str, version: &'a str, state: &'a [u8]) -> Self {
        Self { name, version, state }
    }

    /// `NAME` of the previous version (the same as yours, for a swap the host accepted).
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// `VERSION` of the previous version.
    pub fn version(&self) -> &'a str {
        self.version
    }

    /// What the previous version's `snapshot` returned.
    pub fn state(&self) -> &'a [u8] {
        self.state
    }
}

/// A method a module declares in [`Module::METHODS`].
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub struct Method(RawMethod);

impl Method {
    /// A method that may change the state (`&mut self`).
    pub const fn new(name: &'static str) -> Self {
        Method(RawMethod::new(name, 0))
    }

    /// A method that only reads the state (`&self`).
    pub const fn read_only(name: &'static str) -> Self {
        Method(RawMethod::new(name, RawMethod::READ_ONLY))
    }
}

/// An error a module returns to the host, with a message for a person.
///
/// `?` turns any error into one: every `std::error::Error + Send + Sync`
/// (serde, parse, io errors…; its `source()` chain is appended, as
/// `"outer: inner"`), a `&str` or a `String` (`.ok_or("no such player")?`),
/// and `Box<dyn Error + Send + Sync>`. For that, `ModuleError` itself does
/// not implement `std::error::Error` (as `anyhow::Error` does not): read it
/// with [`ModuleError::message`] or `Display`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleError {
    message: String,
}

impl ModuleError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ModuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

// One blanket conversion covers errors, `&str`, `String` and boxed errors:
// std converts each of them into a `Box<dyn Error>`. It would overlap with
// `From<T> for T` if `ModuleError` were an `Error` itself, which is why it is not.
impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for ModuleError {
    fn from(error: E) -> Self {
        let error = error.into();
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self { message }
    }
}

/// Export `$module` (a type that implements [`Module`]) from this `cdylib`.
///
/// Use it once per crate; the crate must have `crate-type = ["cdylib"]`.
#[macro_export]
macro_rules! export_module {
    ($module:ty) => {
        /// Entry point the hotswap host looks up: describes this module.
        #[unsafe(no_mangle)]
        pub extern "C" fn hotswap_module_descriptor() -> *const $crate::__private::abi::DescriptorHeader {
            static DESCRIPTOR: $crate::__private::abi::ModuleDescriptor =
                $crate::__private::descriptor::<$module>(cfg!(panic = "unwind"));
            // The header is the first field of a #[repr(C)] struct, so a
            // pointer to the whole descriptor is a pointer to its header.
            ::core::ptr::from_ref(&DESCRIPTOR).cast()
        }
    };
}

/// Used by [`export_module!`] and [`module`]; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use hotswap_abi as abi;
    pub use serde_json;

    pub use crate::typed::{
        call_without_host, decode_argument, no_migrate, unknown_method, write_reply, write_result,
    };
    pub use crate::typed_sessions::{
        decode_join_request, decode_message, hook_result, hook_text, leave_result,
    };

    use super::*;
    use hotswap_abi::{ABI_VERSION, DescriptorHeader, MAGIC, ModuleDescriptor};

    /// Appends `state`'s snapshot (envelope, shape, payload) to `into`.
    pub fn encode_state<T: serde::Serialize + serde::de::DeserializeOwned>(
        state: &T,
        layout: u32,
        into: &mut Vec<u8>,
    ) -> Result<(), ModuleError> {
        envelope::encode(state, layout, into).map_err(|error| ModuleError::new(error.to_string()))
    }

    /// A typed module's `init`: `T::default()` when fresh, a snapshot of
    /// `layout` decoded (its shape checked), anything else through `migrate`.
    pub fn restore_state<T: serde::de::DeserializeOwned + Default>(
        previous: Option<Previous<'_>>,
        layout: u32,
        migrate: impl FnOnce(Previous<'_>) -> Result<T, ModuleError>,
    ) -> Result<T, ModuleError> {
        envelope::restore(previous, layout, migrate)
    }

    pub const fn descriptor<T: Module>(panic_unwind: bool) -> ModuleDescriptor {
        ModuleDescriptor {
            header: DescriptorHeader {
                magic: MAGIC,
                abi_version: ABI_VERSION,
                descriptor_size: size_of::<ModuleDescriptor>() as u32,
            },
            name: RawStr::new(T::NAME),
            version: RawStr::new(T::VERSION),
            sdk_version: RawStr::new(env!("CARGO_PKG_VERSION")),
            rustc_version: RawStr::new(env!("HOTSWAP_RUSTC_VERSION")),
            panic_unwind: panic_unwind as u8,
            state_layout: match T::LAYOUT {
                Some(layout) => layout,
                None => 0,
            },
            // `Method` is a transparent `RawMethod`.
            methods: T::METHODS.as_ptr().cast(),
            method_count: T::METHODS.len(),
            init: Some(entry_points::init::<T>),
            handle: Some(entry_points::handle::<T>),
            snapshot: Some(entry_points::snapshot::<T>),
            drop_state: Some(entry_points::drop_state::<T>),
            free_buf: Some(entry_points::free_buf),
            on_join: Some(entry_points::on_join::<T>),
            on_message: Some(entry_points::on_message::<T>),
            on_leave: Some(entry_points::on_leave::<T>),
            on_tick: Some(entry_points::on_tick::<T>),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_error_converts_from_strings() {
        assert_eq!(ModuleError::from("bad").message(), "bad");
        assert_eq!(ModuleError::from(String::from("worse")).to_string(), "worse");
    }

    #[test]
    fn question_mark_turns_any_error_into_a_module_error_with_its_causes() {
        fn parse(text: &str) -> Result<i64, ModuleError> {
            Ok(text.parse::<i64>()?)
        }
        assert_eq!(parse("12"), Ok(12));
        assert_eq!(parse("twelve").unwrap_err().message(), "invalid digit found in string");

        fn text_or_refusal(value: Option<i64>) -> Result<i64, ModuleError> {
            Ok(value.ok_or("no value")?)
        }
        assert_eq!(text_or_refusal(None).unwrap_err().message(), "no value");

        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("cannot load the table")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        fn load() -> Result<(), ModuleError> {
            Err(Outer(std::io::Error::other("disk gone")))?
        }
        assert_eq!(load().unwrap_err().message(), "cannot load the table: disk gone");

        fn boxed() -> Result<(), ModuleError> {
            Err(Box::<dyn std::error::Error + Send + Sync>::from("boxed"))?
        }
        assert_eq!(boxed().unwrap_err().message(), "boxed");
    }
}
