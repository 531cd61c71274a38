//! The services the engine lends a module during each entry point
//! (`hotswap_abi::HostApi`): the reply buffer, the clocks, the log, timers
//! and the instance key.
//!
//! Each entry point gets a [`HostCall`] on the host's stack; the module
//! reaches it only through the functions of [`HOST_API`], which take the
//! pointer back. Nothing here trusts the module's bytes: text is checked for
//! UTF-8, sizes are capped.

use std::ffi::c_void;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hotswap_abi::{CallStatus, HostApi, RawBytes, RawHost, RawNow, RawStr, level};

/// A call a module asked for with `ctx.after` during one call; the engine
/// keeps it with the instance once the call returns (`engine/timers.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TimerRequest {
    /// The wall clock when the module asked, plus its delay: a wall-clock
    /// time means the same after a restart.
    pub due: SystemTime,
    pub method: String,
    pub payload: Vec<u8>,
}

/// The timers one call asked for, and how many more it may ask for.
#[derive(Debug)]
pub(crate) struct TimerRequests {
    pub asked: Vec<TimerRequest>,
    /// The instance's limit (`EngineConfig::max_timers_per_instance`).
    pub limit: usize,
    /// How many the instance had pending when the call started.
    pub pending: usize,
}

impl TimerRequests {
    pub fn new(limit: usize, pending: usize) -> Self {
        TimerRequests { asked: Vec::new(), limit, pending }
    }
}

/// The host's side of one entry point: what the module may read and what it
/// hands back through the table.
pub(crate) struct HostCall<'a> {
    pub module: &'a str,
    pub version: &'a str,
    pub instance: &'a str,
    /// The method called, or the entry point (`init`, `snapshot`, `drop`).
    pub method: &'a str,
    /// The reply written so far (only `handle` keeps one).
    pub reply: Vec<u8>,
    /// Where `ctx.after` puts its timers; `None` outside `handle`, where a
    /// timer is refused.
    pub timers: Option<&'a mut TimerRequests>,
    /// Where `ctx.send`, `broadcast` and `close` put their pushes; `None`
    /// outside calls, hooks and ticks, where they are refused.
    pub pushes: Option<&'a mut Vec<Push>>,
    /// The reason of the last refusal, kept alive for the module to read.
    refusal: String,
}

impl<'a> HostCall<'a> {
    pub fn new(module: &'a str, version: &'a str, instance: &'a str, method: &'a str) -> Self {
        HostCall {
            module,
            version,
            instance,
            method,
            reply: Vec::new(),
            timers: None,
            pushes: None,
            refusal: String::new(),
        }
    }

    /// The raw form lent to the module; valid while `self` is neither moved nor dropped.
    pub fn raw(&mut self) -> RawHost {
        RawHost { api: &HOST_API, call: std::ptr::from_mut(self).cast() }
    }
}

/// The table every module gets. Functions are appended, never reordered.
pub(crate) static HOST_API: HostApi = HostApi {
    size: size_of::<HostApi>() as u32,
    reply: Some(reply),
    now: Some(now),
    log: Some(log),
    after: Some(after),
    instance: Some(instance),
    send: Some(send),
    broadcast: Some(broadcast),
    close: Some(close),
};

/// A message a module pushed to sessions during one call, hook or tick,
/// handed to the host's [`PushSink`](crate::PushSink) once the module returns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Push {
    /// Bytes for one session.
    Send { session: u64, bytes: Vec<u8> },
    /// Bytes for every session of the instance.
    Broadcast { bytes: Vec<u8> },
    /// Close one session with a reason, after what was queued before.
    Close { session: u64, reason: String },
}

/// Most pushes one call may make; past it they are refused.
pub(crate) const MAX_PUSHES_PER_CALL: usize = 65_536;

/// Records `push` for the call behind `call`, or refuses it.
///
/// # Safety
/// As [`host_call`].
unsafe fn record_push(call: *mut c_void, push: impl FnOnce() -> Push) -> CallStatus {
    // SAFETY: the caller's guarantee.
    let call = unsafe { host_call(call) };
    match call.pushes.as_deref_mut() {
        Some(pushes) if pushes.len() < MAX_PUSHES_PER_CALL => {
            pushes.push(push());
            CallStatus::OK
        }
        _ => CallStatus::ERROR,
    }
}

unsafe extern "C" fn send(call: *mut c_void, session: u64, bytes: RawBytes) -> CallStatus {
    // SAFETY: the module passes back the pointer it was lent, during the
    // call; its bytes are readable for the duration of this call.
    unsafe { record_push(call, || Push::Send { session, bytes: bytes.as_slice().to_vec() }) }
}

unsafe extern "C" fn broadcast(call: *mut c_void, bytes: RawBytes) -> CallStatus {
    // SAFETY: as in `send`.
    unsafe { record_push(call, || Push::Broadcast { bytes: bytes.as_slice().to_vec() }) }
}

unsafe extern "C" fn close(call: *mut c_void, session: u64, reason: RawStr) -> CallStatus {
    // SAFETY: as in `send`; the reason is shown lossily if it is not UTF-8.
    unsafe {
        record_push(call, || Push::Close {
            session,
            reason: String::from_utf8_lossy(RawBytes { ptr: reason.ptr, len: reason.len }.as_slice())
                .into_owned(),
        })
    }
}

/// # Safety
/// `call` is the pointer of a live `HostCall` lent to the entry point in
/// progress on this thread, which no one else uses meanwhile.
unsafe fn host_call<'c>(call: *mut c_void) -> &'c mut HostCall<'c> {
    // SAFETY: the caller's guarantee.
    unsafe { &mut *call.cast::<HostCall<'c>>() }
}

unsafe extern "C" fn reply(call: *mut c_void, bytes: RawBytes) {
    // SAFETY: the module passes back the pointer it was lent, during the call.
    let call = unsafe { host_call(call) };
    // SAFETY: the module's bytes are readable for the duration of this call.
    call.reply.extend_from_slice(unsafe { bytes.as_slice() });
}

/// A point fixed for this process, from which the monotonic clock counts.
fn process_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

unsafe extern "C" fn now(_call: *mut c_void) -> RawNow {
    let epoch = process_epoch();
    let unix_nanos = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |nanos| -nanos),
    };
    RawNow { unix_nanos, monotonic_nanos: u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX) }
}

unsafe extern "C" fn log(call: *mut c_void, level: u32, target: RawStr, message: RawStr) {
    // SAFETY: the module passes back the pointer it was lent, during the call.
    let call = unsafe { host_call(call) };
    // SAFETY: borrowed for this call; `to_str` checks the UTF-8.
    let target = unsafe { target.to_str() }.unwrap_or("(not UTF-8)");
    // SAFETY: borrowed for this call.
    let bytes = unsafe { RawBytes { ptr: message.ptr, len: message.len }.as_slice() };
    // Shown lossily rather than dropped when it is not UTF-8.
    let message = String::from_utf8_lossy(bytes);
    let (module, version, instance, method) = (call.module, call.version, call.instance, call.method);
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(target: "hotswap::module", $level, module, version, instance, method, target, "{message}")
        };
    }
    match level {
        level::ERROR => emit!(tracing::Level::ERROR),
        level::WARN => emit!(tracing::Level::WARN),
        level::INFO => emit!(tracing::Level::INFO),
        level::DEBUG => emit!(tracing::Level::DEBUG),
        _ => emit!(tracing::Level::TRACE),
    }
}

unsafe extern "C" fn after(
    call: *mut c_void,
    delay_nanos: u64,
    method: RawStr,
    payload: RawBytes,
    reason: *mut RawStr,
) -> CallStatus {
    // SAFETY: the module passes back the pointer it was lent, during the call.
    let call = unsafe { host_call(call) };
    // SAFETY: borrowed for this call; `to_str` checks the UTF-8.
    let method = unsafe { method.to_str() };
    let due = SystemTime::now().checked_add(Duration::from_nanos(delay_nanos));
    let refused = match (method, call.timers.as_deref_mut(), due) {
        (Err(_), _, _) => Some("the method name is not valid UTF-8".to_owned()),
        (Ok(_), None, _) => Some(format!(
            "timers can only be set during a call, not in {}; set it in the call that needs it",
            call.method
        )),
        (Ok(_), Some(timers), _) if timers.pending + timers.asked.len() >= timers.limit => Some(format!(
            "instance '{}' of module '{}' has {} pending timers and may have at most {} \
             (EngineConfig::max_timers_per_instance, the daemon's engine.max_timers_per_instance); \
             let some fire first",
            call.instance,
            call.module,
            timers.pending + timers.asked.len(),
            timers.limit
        )),
        (Ok(_), Some(_), None) => {
            Some(format!("a delay of {delay_nanos} ns is past the end of the host's clock"))
        }
        (Ok(method), Some(timers), Some(due)) => {
            timers.asked.push(TimerRequest {
                due,
                method: method.to_owned(),
                // SAFETY: borrowed for this call.
                payload: unsafe { payload.as_slice() }.to_vec(),
            });
            None
        }
    };
    match refused {
        None => CallStatus::OK,
        Some(text) => {
            call.refusal = text;
            // SAFETY: `reason` is the module's writable local; the text lives
            // in the `HostCall` until the entry point returns.
            unsafe { reason.write(RawStr::new(&call.refusal)) };
            CallStatus::ERROR
        }
    }
}

unsafe extern "C" fn instance(call: *mut c_void) -> RawStr {
    // SAFETY: the module passes back the pointer it was lent, during the call.
    RawStr::new(unsafe { host_call(call) }.instance)
}
