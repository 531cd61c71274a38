//! What a module can ask of its host during a call: the clocks, the log,
//! timers and the instance key ([`Context`]), and where the reply goes
//! ([`Reply`]).
//!
//! Both reach the host through the table it lends each entry point
//! (`hotswap_abi::HostApi`). Outside a host — in a module's own
//! `cargo test` — they are backed by a [`Recorder`] instead, which keeps
//! what the module asked for so a test can look at it.

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hotswap_abi::{CallStatus, HostApi, RawBytes, RawHost, RawNow, RawStr, level};

use crate::ModuleError;

/// The offset just past a field of [`HostApi`] (every field is one pointer
/// or a `u32` before them): the table size a host needs for the field to be
/// present.
macro_rules! field_end {
    ($field:ident) => {
        ::core::mem::offset_of!(HostApi, $field) + ::core::mem::size_of::<usize>()
    };
}

/// The host's clocks at one moment, from [`Context::now`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// The host's wall clock. Use it for anything kept in the state: it
    /// means the same after a restart or a process upgrade.
    pub wall: SystemTime,
    /// A monotonic clock, from a point fixed for the host process: for
    /// measuring intervals within one process. It starts again after a
    /// process upgrade or a restart.
    pub monotonic: Duration,
}

/// How severe a log record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    pub(crate) fn to_raw(self) -> u32 {
        match self {
            Level::Error => level::ERROR,
            Level::Warn => level::WARN,
            Level::Info => level::INFO,
            Level::Debug => level::DEBUG,
            Level::Trace => level::TRACE,
        }
    }
}

/// A call a module asked for with [`Context::after`], as a [`Recorder`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledCall {
    pub delay: Duration,
    pub method: String,
    pub payload: Vec<u8>,
}

/// A log record, as a [`Recorder`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub level: Level,
    pub target: String,
    pub message: String,
}

/// Stands in for a host outside one: keeps the log records and timers a
/// module asked for, and answers [`Context::now`] and
/// [`Context::instance`] from its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorder {
    /// What [`Context::instance`] returns.
    pub instance: String,
    /// What [`Context::now`] returns; `None` reads the real clocks.
    pub now: Option<Now>,
    pub logs: Vec<LogRecord>,
    pub scheduled: Vec<ScheduledCall>,
    /// What the module pushed to sessions ([`Context::send`], `broadcast`, `close`), in order.
    pub pushes: Vec<crate::Push>,
}

impl Recorder {
    pub fn new(instance: impl Into<String>) -> Self {
        Recorder {
            instance: instance.into(),
            now: None,
            logs: Vec::new(),
            scheduled: Vec::new(),
            pushes: Vec::new(),
        }
    }
}

pub(crate) enum Backend {
    /// Lent by the host for the entry point in progress.
    Host(RawHost),
    /// Borrowed from the caller of [`Context::with_recorder`] for its closure.
    Local(*mut Recorder),
}

/// The host's services for the call in progress: `now`, `log`, `after` and
/// `instance`. A module gets one as `&mut Context`; it cannot keep it past
/// the call (it is neither `Send` nor `'static` data, and the host's table
/// is only lent for the call).
///
/// # Example
///
/// An auction that closes itself: `open` asks the host to call `close` on
/// the same instance later. The timer is the host's to keep, with the
/// instance, so it still fires after a swap, a process upgrade or a
/// restart.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
///
/// use hotswap_module::{Context, ModuleError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Default)]
/// pub struct Auction {
///     /// Wall-clock time, in ms since 1970: it means the same after a restart.
///     closes_at_ms: Option<u64>,
///     best: Option<(String, u64)>,
///     closed: bool,
/// }
///
/// #[derive(Deserialize)]
/// pub struct Bid {
///     bidder: String,
///     amount: u64,
/// }
///
/// #[hotswap_module::module(name = "auction", version = "1.0.0", layout = 1)]
/// impl Auction {
///     pub fn open(&mut self, ctx: &mut Context, seconds: u64) -> Result<u64, ModuleError> {
///         let now_ms = u64::try_from(ctx.now().wall.duration_since(UNIX_EPOCH)?.as_millis())?;
///         let closes_at_ms =
///             seconds.checked_mul(1000).and_then(|ms| ms.checked_add(now_ms)).ok_or("too long")?;
///         // Ask first, change after: a refused timer leaves the state as it was.
///         ctx.after(Duration::from_secs(seconds), "close", b"")?;
///         self.closes_at_ms = Some(closes_at_ms);
///         ctx.log(format!("auction {} open for {seconds} s", ctx.instance()));
///         Ok(closes_at_ms)
///     }
///
///     pub fn bid(&mut self, bid: Bid) -> Result<u64, ModuleError> {
///         if self.closed {
///             return Err("the auction is closed".into());
///         }
///         if self.best.as_ref().is_some_and(|(_, best)| bid.amount <= *best) {
///             return Err("a bid must beat the best one".into());
///         }
///         self.best = Some((bid.bidder, bid.amount));
///         Ok(bid.amount)
///     }
///
///     /// The timer set by `open` calls this.
///     pub fn close(&mut self) -> Option<(String, u64)> {
///         self.closed = true;
///         log::info!("closed with {:?}", self.best);
///         self.best.clone()
///     }
/// }
///
/// // In the module's own `cargo test`, a recorder stands in for the host:
/// use hotswap_module::testing::Harness;
///
/// let mut auction = Harness::<Auction>::new()?;
/// auction.call_json::<u64>("open", &60)?;
/// let timer = &auction.recorder().scheduled[0];
/// assert_eq!((timer.delay, timer.method.as_str()), (Duration::from_secs(60), "close"));
/// assert_eq!(auction.recorder().logs[0].message, "auction test open for 60 s");
/// auction.call("bid", br#"{"bidder": "ann", "amount": 5}"#)?;
/// // The host would run the timer in 60 s; the test calls `close` now.
/// assert_eq!(auction.call("close", b"")?, br#"["ann",5]"#);
/// assert!(auction.call("bid", br#"{"bidder": "bo", "amount": 9}"#).is_err());
/// # Ok::<(), ModuleError>(())
/// ```
pub struct Context {
    pub(crate) backend: Backend,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("instance", &self.instance()).finish()
    }
}

impl Context {
    /// # Safety
    /// `host` must be the table and call pointer the host passed to the entry
    /// point in progress, and the `Context` must not outlive that entry point.
    pub(crate) unsafe fn from_host(host: RawHost) -> Self {
        Context { backend: Backend::Host(host) }
    }

    /// Runs `body` with a context backed by `recorder` instead of a host:
    /// for a module's own tests, and for running a typed module's method
    /// through [`Module::handle`](crate::Module::handle).
    pub fn with_recorder<R>(recorder: &mut Recorder, body: impl FnOnce(&mut Context) -> R) -> R {
        let mut context = Context { backend: Backend::Local(recorder) };
        body(&mut context)
    }

    /// The host's table, and whether it reaches `field_end` (the offset just
    /// past the field a caller wants): hosts only append to the table.
    pub(crate) fn host_api(host: &RawHost, field_end: usize) -> Option<&HostApi> {
        // SAFETY: `host.api` is the host's static table, valid for the whole
        // entry point (see `from_host`).
        let api = unsafe { host.api.as_ref() }?;
        (api.size as usize >= field_end).then_some(api)
    }

    /// The host's clocks.
    pub fn now(&self) -> Now {
        match &self.backend {
            Backend::Host(host) => Self::host_api(host, field_end!(now))
                .and_then(|api| api.now)
                // SAFETY: a function of the host's table, called with the
                // call pointer it was lent with, during the entry point.
                .map(|now| from_raw_now(unsafe { now(host.call) }))
                .unwrap_or_else(local_now),
            // SAFETY: the recorder is borrowed for the closure this context lives in.
            Backend::Local(recorder) => unsafe { (**recorder).now }.unwrap_or_else(local_now),
        }
    }

    /// Writes `message` to the host's log at info level, with the module,
    /// version, instance and method as fields. The `log` crate's macros
    /// reach the same log (see the crate docs).
    pub fn log(&mut self, message: impl fmt::Display) {
        self.log_at(Level::Info, message);
    }

    /// Writes `message` to the host's log at `level`.
    pub fn log_at(&mut self, level: Level, message: impl fmt::Display) {
        let message = message.to_string();
        match &self.backend {
            Backend::Host(host) => write_log(host, level, "", &message),
            Backend::Local(recorder) => {
                // SAFETY: the recorder is borrowed for the closure this context lives in.
                let recorder = unsafe { &mut **recorder };
                recorder.logs.push(LogRecord { level, target: String::new(), message });
            }
        }
    }

    /// Asks the host to call `method` on this instance with `payload` once
    /// `delay` has passed. Timers are kept by the host with the instance:
    /// they survive swaps, process upgrades and restarts (a timer due while
    /// the server was down runs when it is back). Refused where the host
    /// cannot keep one: outside a call (in `init`, `snapshot` or a `Drop`),
    /// or past the host's limit of pending timers per instance.
    pub fn after(
        &mut self,
        delay: Duration,
        method: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), ModuleError> {
        let payload = payload.as_ref();
        match &self.backend {
            Backend::Host(host) => {
                let Some(after) = Self::host_api(host, field_end!(after)).and_then(|api| api.after) else {
                    return Err(ModuleError::new("this host keeps no timers (ctx.after)"));
                };
                let delay_nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
                let mut reason = RawStr::new("");
                // SAFETY: a function of the host's table, called with its
                // call pointer during the entry point; the method, payload
                // and `reason` outlive the call.
                let status = unsafe {
                    after(host.call, delay_nanos, RawStr::new(method), RawBytes::new(payload), &mut reason)
                };
                if status == CallStatus::OK {
                    return Ok(());
                }
                // SAFETY: the host keeps its reason alive until the entry
                // point returns; `to_str` checks the UTF-8.
                let reason = unsafe { reason.to_str() }.unwrap_or("the host gave no readable reason");
                Err(ModuleError::new(format!("ctx.after({delay:?}, {method:?}) was refused: {reason}")))
            }
            Backend::Local(recorder) => {
                // SAFETY: the recorder is borrowed for the closure this context lives in.
                let recorder = unsafe { &mut **recorder };
                recorder.scheduled.push(ScheduledCall {
                    delay,
                    method: method.to_owned(),
                    payload: payload.to_vec(),
                });
                Ok(())
            }
        }
    }

    /// The key of the instance this call runs on.
    pub fn instance(&self) -> &str {
        match &self.backend {
            Backend::Host(host) => {
                let Some(instance) = Self::host_api(host, field_end!(instance)).and_then(|api| api.instance)
                else {
                    return "";
                };
                // SAFETY: a function of the host's table, called with its call
                // pointer; the key it returns lives as long as the call, and
                // this context does not outlive the call.
                unsafe { instance(host.call).to_str() }.unwrap_or("")
            }
            // SAFETY: the recorder is borrowed for the closure this context lives in.
            Backend::Local(recorder) => unsafe { &(**recorder).instance },
        }
    }
}

fn from_raw_now(raw: RawNow) -> Now {
    let wall = if raw.unix_nanos >= 0 {
        UNIX_EPOCH + Duration::from_nanos(raw.unix_nanos as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(raw.unix_nanos.unsigned_abs())
    };
    Now { wall, monotonic: Duration::from_nanos(raw.monotonic_nanos) }
}

/// The clocks read here, where no host or recorder gives them.
fn local_now() -> Now {
    thread_local! {
        // A plain value, so the thread-local has no destructor (see the
        // panic-location slot in lib.rs for why that matters).
        static EPOCH: Cell<Option<std::time::Instant>> = const { Cell::new(None) };
    }
    let now = std::time::Instant::now();
    let epoch = EPOCH.with(|slot| *slot.get().get_or_insert(now));
    Now { wall: SystemTime::now(), monotonic: now - epoch }
}

/// A log record sent to the host, if its table has a log.
pub(crate) fn write_log(host: &RawHost, level: Level, target: &str, message: &str) {
    if let Some(log) = Context::host_api(host, field_end!(log)).and_then(|api| api.log) {
        // SAFETY: a function of the host's table, called with its call
        // pointer during the entry point; the strings outlive the call.
        unsafe { log(host.call, level.to_raw(), RawStr::new(target), RawStr::new(message)) };
    }
}

enum ReplyBackend {
    Host(RawHost),
    Local(*mut Vec<u8>),
}

/// Where a call's reply goes: straight into the host's buffer, so a reply is
/// neither allocated in the module nor copied back. Implements
/// [`std::io::Write`], so a serializer can write into it.
pub struct Reply {
    backend: ReplyBackend,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply").finish_non_exhaustive()
    }
}

impl Reply {
    /// # Safety
    /// As [`Context::from_host`].
    pub(crate) unsafe fn from_host(host: RawHost) -> Self {
        Reply { backend: ReplyBackend::Host(host) }
    }

    /// Runs `body` with a reply that appends to `buffer`.
    pub fn with_buffer<R>(buffer: &mut Vec<u8>, body: impl FnOnce(&mut Reply) -> R) -> R {
        let mut reply = Reply { backend: ReplyBackend::Local(buffer) };
        body(&mut reply)
    }

    /// Appends `bytes` to the reply.
    #[inline]
    pub fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match &self.backend {
            ReplyBackend::Host(host) => {
                if let Some(reply) = Context::host_api(host, field_end!(reply)).and_then(|api| api.reply) {
                    // SAFETY: a function of the host's table, called with its
                    // call pointer during the entry point; `bytes` outlives it.
                    unsafe { reply(host.call, RawBytes::new(bytes)) };
                }
            }
            // SAFETY: the buffer is borrowed for the closure this reply lives in.
            ReplyBackend::Local(buffer) => unsafe { &mut **buffer }.extend_from_slice(bytes),
        }
    }
}

impl std::io::Write for Reply {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.push(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
