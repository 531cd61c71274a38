//! The `extern "C"` entry points the descriptor points at: each one guards
//! the module's code against panics, checks the host's text, lends the
//! host's services to the module for its duration, and hands results back
//! by the rules of `hotswap_abi`.

use std::any::Any;
use std::borrow::Cow;
use std::cell::Cell;
use std::ffi::c_void;
use std::io::Write as _;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use hotswap_abi::{CallStatus, ModuleBuf, RawBytes, RawHost, RawPrevious, RawStr};

use crate::{Context, Module, ModuleError, Previous, Reply, Session};

/// Hands `bytes` to the host; the host gives them back through `free_buf`.
fn give(out: *mut ModuleBuf, bytes: Vec<u8>) {
    let mut bytes = ManuallyDrop::new(bytes);
    let buf = ModuleBuf { ptr: bytes.as_mut_ptr(), len: bytes.len(), cap: bytes.capacity() };
    // SAFETY: the host passes a valid, writable `out` to every entry point.
    unsafe { out.write(buf) };
}

/// Turns the outcome of a guarded entry point into a status and output bytes.
fn finish(outcome: std::thread::Result<Result<Vec<u8>, ModuleError>>, out: *mut ModuleBuf) -> CallStatus {
    match outcome {
        Ok(Ok(bytes)) => {
            give(out, bytes);
            CallStatus::OK
        }
        Ok(Err(error)) => {
            give(out, error.message.into_bytes());
            CallStatus::ERROR
        }
        Err(payload) => {
            give(out, panic_message(payload).into_owned().into_bytes());
            CallStatus::PANIC
        }
    }
}

thread_local! {
    /// Where the last panic on this thread happened, as text, written by our
    /// panic hook and read by the entry point that catches the panic. A plain
    /// byte array: a thread-local that needs dropping would register a
    /// destructor, and glibc cannot unload a library with one pending.
    static PANIC_LOCATION: Cell<([u8; 160], usize)> = const { Cell::new(([0; 160], 0)) };
}

/// Replaces this module's panic hook (each `cdylib` has its own copy of std,
/// so this affects this module version only) with one that records where
/// the panic happened and prints nothing. The host reports the panic with its
/// message and location. The default hook would also print a backtrace when
/// `RUST_BACKTRACE` is set, and resolving one maps the module file for good,
/// which keeps this version in memory after the host unloads it.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            if let Some(location) = info.location() {
                let mut text = [0u8; 160];
                let mut cursor = std::io::Cursor::new(&mut text[..]);
                // A location longer than the buffer is cut short; that is fine.
                let _ = write!(cursor, "{}:{}:{}", location.file(), location.line(), location.column());
                let len = cursor.position() as usize;
                PANIC_LOCATION.with(|slot| slot.set((text, len)));
            }
        }));
    });
}

/// The location recorded by our hook for the panic being handled, if any.
fn take_panic_location() -> Option<String> {
    let (text, len) = PANIC_LOCATION.with(|slot| slot.replace(([0; 160], 0)));
    (len > 0).then(|| String::from_utf8_lossy(&text[..len]).into_owned())
}

/// The message of a caught panic, with where it happened. Payloads other than strings are leaked
/// rather than dropped: their destructor could panic again, and a second
/// panic here would unwind across `extern "C"` and abort the host.
fn panic_message(payload: Box<dyn Any + Send>) -> Cow<'static, str> {
    let message = payload_message(payload);
    match take_panic_location() {
        Some(location) => Cow::Owned(format!("{message} (at {location})")),
        None => message,
    }
}

fn payload_message(payload: Box<dyn Any + Send>) -> Cow<'static, str> {
    match payload.downcast::<String>() {
        Ok(message) => Cow::Owned(*message),
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(message) => Cow::Borrowed(*message),
            Err(other) => {
                std::mem::forget(other);
                Cow::Borrowed("panic with a non-string payload")
            }
        },
    }
}

/// Text the host passed, checked: a `&str` built from bytes that are not
/// UTF-8 is undefined behaviour, and the host is another build that may be
/// broken or hostile. Bad bytes become an error for the host, naming `what`.
///
/// Method names are short and ASCII in practice: checking for ASCII inline
/// first keeps the call path as fast as it was without the check (an
/// out-of-line `str::from_utf8` cost a `noop` call 10 to 20 ns, measured
/// with `cargo bench -p hotswap-bench --bench call`).
///
/// # Safety
/// `raw` must describe readable memory that outlives `'a`.
#[inline(always)]
unsafe fn host_text<'a>(raw: RawStr, what: &str) -> Result<&'a str, ModuleError> {
    // SAFETY: the caller's guarantee.
    let bytes = unsafe { RawBytes { ptr: raw.ptr, len: raw.len }.as_slice() };
    if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    checked_text(bytes, what)
}

/// The rest of [`host_text`]: text with non-ASCII bytes, checked in full.
#[cold]
fn checked_text<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, ModuleError> {
    std::str::from_utf8(bytes)
        .map_err(|err| ModuleError::new(format!("the host passed a {what} that is not valid UTF-8 ({err})")))
}

thread_local! {
    /// The host lent to the entry point running on this thread (null
    /// pointers outside one), for the `log` bridge. A plain `Copy` value, so
    /// the thread-local has no destructor (see `PANIC_LOCATION`).
    pub(crate) static CURRENT_HOST: Cell<RawHost> = const {
        Cell::new(RawHost { api: std::ptr::null(), call: std::ptr::null_mut() })
    };
}

/// Makes `host` the current host of this thread until the guard drops.
///
/// It keeps the address of this thread's `CURRENT_HOST`: in a `cdylib` every
/// `CURRENT_HOST.with` is a call to the loader's `__tls_get_addr`, and one
/// instead of two is measurable on a call that does little
/// (`cargo bench -p hotswap-bench --bench call`).
pub(crate) struct HostScope {
    slot: *const Cell<RawHost>,
    previous: RawHost,
}

impl HostScope {
    /// # Safety
    /// `host` is null or points at the `RawHost` the host passed to the entry
    /// point in progress; the scope ends before that entry point returns.
    #[inline]
    pub(crate) unsafe fn enter(host: *const RawHost) -> (HostScope, RawHost) {
        // SAFETY: the caller's guarantee; a null host is an empty one.
        let host = unsafe { host.as_ref() }
            .copied()
            .unwrap_or(RawHost { api: std::ptr::null(), call: std::ptr::null_mut() });
        let slot = CURRENT_HOST.with(std::ptr::from_ref);
        // SAFETY: this thread's `CURRENT_HOST`, which lives as long as the thread.
        let previous = unsafe { (*slot).replace(host) };
        (HostScope { slot, previous }, host)
    }
}

impl Drop for HostScope {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: `slot` is this thread's `CURRENT_HOST` (a raw pointer keeps
        // the scope on the thread that entered it), alive while the thread
        // is, and the scope ends within the entry point that made it.
        unsafe { (*self.slot).set(self.previous) };
    }
}

pub(crate) unsafe extern "C" fn init<T: Module>(
    host: *const RawHost,
    previous: *const RawPrevious,
    state_out: *mut *mut c_void,
    out: *mut ModuleBuf,
) -> CallStatus {
    // Every instance starts here, so this runs before any other entry point.
    install_panic_hook();
    #[cfg(feature = "log")]
    crate::log_bridge::install();
    // SAFETY: `host` is what the host passed to this entry point; the scope
    // ends when this function returns.
    let _scope = unsafe { HostScope::enter(host) };
    let outcome = catch_unwind(|| {
        // SAFETY: `previous` is null or points at a RawPrevious whose strings
        // and bytes the host keeps alive and unchanged during this call.
        let previous = match unsafe { previous.as_ref() } {
            None => None,
            // SAFETY: as above, for each of the three views.
            Some(raw) => Some(unsafe {
                Previous {
                    name: host_text(raw.name, "previous name")?,
                    version: host_text(raw.version, "previous version")?,
                    state: raw.state.as_slice(),
                }
            }),
        };
        T::init(previous)
    });
    match outcome {
        Ok(Ok(state)) => {
            // SAFETY: the host passes a valid, writable `state_out`.
            unsafe { state_out.write(Box::into_raw(Box::new(state)).cast()) };
            CallStatus::OK
        }
        Ok(Err(error)) => finish(Ok(Err(error)), out),
        Err(payload) => finish(Err(payload), out),
    }
}

pub(crate) unsafe extern "C" fn handle<T: Module>(
    host: *const RawHost,
    state: *mut c_void,
    method: RawStr,
    payload: RawBytes,
    out: *mut ModuleBuf,
) -> CallStatus {
    // SAFETY: `host` is what the host passed to this entry point; the scope,
    // the context and the reply end when this function returns.
    let (_scope, host) = unsafe { HostScope::enter(host) };
    // SAFETY: as above.
    let mut reply = unsafe { Reply::from_host(host) };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the method and payload are borrowed from the caller for the
        // duration of the call.
        let (method, payload) = unsafe { (host_text(method, "method name")?, payload.as_slice()) };
        // SAFETY: `state` came from our own `init::<T>` and the host holds
        // the instance lock, so this is the only reference to it.
        let state = unsafe { &mut *state.cast::<T>() };
        // SAFETY: as for the reply.
        let mut ctx = unsafe { Context::from_host(host) };
        state.call(&mut ctx, method, payload, &mut reply)
    }));
    // On an error or a panic the host drops what was written to the reply
    // and reads the message from `out`.
    match outcome {
        Ok(Ok(())) => CallStatus::OK,
        failed => finish(failed.map(|result| result.map(|()| Vec::new())), out),
    }
}

/// Runs `hook` on the state with the host's context, guarded like `handle`.
///
/// # Safety
/// As `handle`: `host` is what the host passed to the entry point in
/// progress, and `state` came from this module's `init::<T>` and is not
/// used by anyone else during the call.
#[inline]
unsafe fn run_hook<T: Module>(
    host: *const RawHost,
    state: *mut c_void,
    out: *mut ModuleBuf,
    hook: impl FnOnce(&mut T, &mut Context) -> Result<(), ModuleError>,
) -> CallStatus {
    // SAFETY: the caller's guarantee; the scope and the context end when
    // this function returns.
    let (_scope, host) = unsafe { HostScope::enter(host) };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller's guarantee: the only reference to the state.
        let state = unsafe { &mut *state.cast::<T>() };
        // SAFETY: as above, for the host lent to this entry point.
        let mut ctx = unsafe { Context::from_host(host) };
        hook(state, &mut ctx)
    }));
    match outcome {
        Ok(Ok(())) => CallStatus::OK,
        failed => finish(failed.map(|result| result.map(|()| Vec::new())), out),
    }
}

pub(crate) unsafe extern "C" fn on_join<T: Module>(
    host: *const RawHost,
    state: *mut c_void,
    session: u64,
    request: RawBytes,
    out: *mut ModuleBuf,
) -> CallStatus {
    // SAFETY: the host's entry point contract (see `run_hook`); `request` is
    // borrowed for the call.
    unsafe {
        run_hook::<T>(host, state, out, |state, ctx| {
            state.on_join(ctx, Session::from_id(session), request.as_slice())
        })
    }
}

pub(crate) unsafe extern "C" fn on_message<T: Module>(
    host: *const RawHost,
    state: *mut c_void,
    session: u64,
    message: RawBytes,
    out: *mut ModuleBuf,
) -> CallStatus {
    // SAFETY: as `on_join`.
    unsafe {
        run_hook::<T>(host, state, out, |state, ctx| {
            state.on_message(ctx, Session::from_id(session), message.as_slice())
        })
    }
}

pub(crate) unsafe extern "C" fn on_leave<T: Module>(
    host: *const RawHost,
    state: *mut c_void,
    session: u64,
    _empty: RawBytes,
    out: *mut ModuleBuf,
) -> CallStatus {
    // SAFETY: as `on_join`.
    unsafe {
        run_hook::<T>(host, state, out, |state, ctx| {
            state.on_leave(ctx, Session::from_id(session));
            Ok(())
        })
    }
}

pub(crate) unsafe extern "C" fn on_tick<T: Module>(
    host: *const RawHost,
    state: *mut c_void,
    out: *mut ModuleBuf,
) -> CallStatus {
    // SAFETY: as `on_join`.
    unsafe { run_hook::<T>(host, state, out, |state, ctx| state.on_tick(ctx)) }
}

pub(crate) unsafe extern "C" fn snapshot<T: Module>(
    host: *const RawHost,
    state: *const c_void,
    out: *mut ModuleBuf,
) -> CallStatus {
    // SAFETY: `host` is what the host passed to this entry point.
    let _scope = unsafe { HostScope::enter(host) };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `state` came from our own `init::<T>` and is not mutated
        // while the host holds the instance lock for this snapshot.
        let state = unsafe { &*state.cast::<T>() };
        state.snapshot()
    }));
    finish(outcome, out)
}

pub(crate) unsafe extern "C" fn drop_state<T: Module>(
    host: *const RawHost,
    state: *mut c_void,
    out: *mut ModuleBuf,
) -> CallStatus {
    // SAFETY: `host` is what the host passed to this entry point.
    let _scope = unsafe { HostScope::enter(host) };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `state` came from `Box::into_raw` in our `init::<T>`, and
        // the host calls drop_state exactly once, after its last use.
        drop(unsafe { Box::from_raw(state.cast::<T>()) });
        Ok(Vec::new())
    }));
    finish(outcome, out)
}

pub(crate) unsafe extern "C" fn free_buf(buf: ModuleBuf) {
    if !buf.ptr.is_null() {
        // SAFETY: every non-null ModuleBuf was made by `give` from a Vec<u8>
        // of this module's allocator, and the host returns each one once.
        drop(unsafe { Vec::from_raw_parts(buf.ptr, buf.len, buf.cap) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_recovered_with_their_location() {
        install_panic_hook();
        let line = line!() + 1;
        let caught = catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(panic_message(caught), format!("boom 7 (at crates/module/src/entry_points.rs:{line}:38)"));
        let caught = catch_unwind(|| std::panic::panic_any(42u8)).unwrap_err();
        assert!(panic_message(caught).starts_with("panic with a non-string payload (at "));
        // A location is used once: a later message without a panic hook call has none.
        assert_eq!(payload_message(Box::new("plain")), "plain");
        assert_eq!(take_panic_location(), None);
    }
}
