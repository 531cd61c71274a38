//! The binary contract between a hotswap host and a hotswap module.
//!
//! A module is a `cdylib` built by a different compilation than the host (maybe
//! a different `rustc`, always its own copy of `std` and possibly its own
//! allocator). The only things that cross the boundary are the `#[repr(C)]`
//! types and `extern "C"` function pointers defined here.
//!
//! Rules both sides follow:
//!
//! * The module exports one symbol, [`DESCRIPTOR_SYMBOL`], a function that
//!   returns a pointer to a static [`ModuleDescriptor`].
//! * The descriptor starts with a [`DescriptorHeader`] whose layout never
//!   changes, so a host can read the magic and ABI version of a module built
//!   against any version of this crate and refuse it with a clear message.
//! * A buffer is freed by the side that allocated it: [`ModuleBuf`]s are
//!   allocated by the module and given back to its `free_buf`; borrowed
//!   [`RawStr`]/[`RawBytes`] views are only valid for the duration of the call.
//!   A call's reply is the exception: the module writes it into the host's
//!   buffer through [`HostApi::reply`], so a reply is neither allocated in the
//!   module nor handed back to be freed.
//! * The host lends every entry point a [`RawHost`]: its services (clock,
//!   log, timers, the instance key, the reply) as a table of functions,
//!   [`HostApi`]. The table only grows: a field is added at its end, and the
//!   module reads it only if [`HostApi::size`] says the host has it. New
//!   services are additions, not a new ABI version.
//! * No entry point unwinds: the SDK catches every panic and reports it as
//!   [`CallStatus::PANIC`] with the message in the output buffer.
//! * Neither side trusts the other's bytes: the descriptor's entry points
//!   are `Option`s, and a host refuses a module with a null one; text is
//!   checked for UTF-8 by the side that receives it ([`RawStr::to_str`]).
//!
//! Module authors never use this crate directly; `hotswap-module` does.

#![no_std]

use core::ffi::c_void;

/// First eight bytes of every descriptor.
pub const MAGIC: [u8; 8] = *b"HOTSWAP\x01";

/// Version of the layout that follows the header. Bump it on any change to
/// [`ModuleDescriptor`] or to the entry point signatures.
///
/// Version 2 added the host services ([`RawHost`]), the reply written into
/// the host's buffer, the method list and the state layout.
pub const ABI_VERSION: u32 = 2;

/// Name of the exported descriptor function, NUL-terminated for `dlsym`.
pub const DESCRIPTOR_SYMBOL: &[u8] = b"hotswap_module_descriptor\0";

/// Borrowed string: valid only for the duration of the call it is passed to.
/// It is meant to hold UTF-8, but the receiving side checks: the other side
/// is a different build, maybe a broken or hostile one (see [`RawStr::to_str`]).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl RawStr {
    pub const fn new(s: &str) -> Self {
        Self { ptr: s.as_ptr(), len: s.len() }
    }

    /// The string, if its bytes are valid UTF-8. There is no unchecked
    /// variant: bytes from the other side of the boundary are never trusted
    /// to be UTF-8, and a `&str` that is not is undefined behaviour.
    ///
    /// # Safety
    /// `ptr`/`len` must describe readable memory that outlives `'a` (when
    /// `len` is 0, `ptr` is not read and may be null).
    pub unsafe fn to_str<'a>(self) -> Result<&'a str, core::str::Utf8Error> {
        // SAFETY: the caller's guarantee is the one `RawBytes::as_slice` needs.
        let bytes = unsafe { RawBytes { ptr: self.ptr, len: self.len }.as_slice() };
        core::str::from_utf8(bytes)
    }
}

/// Borrowed bytes: valid only for the duration of the call they are passed to.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawBytes {
    pub ptr: *const u8,
    pub len: usize,
}

impl RawBytes {
    pub const fn new(b: &[u8]) -> Self {
        Self { ptr: b.as_ptr(), len: b.len() }
    }

    /// # Safety
    /// `ptr`/`len` must describe readable memory that outlives `'a`.
    pub unsafe fn as_slice<'a>(self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the caller guarantees ptr/len point at live bytes for 'a.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A byte buffer allocated by the module (a `Vec<u8>` taken apart). The host
/// copies what it needs and hands it back to the module's `free_buf`.
#[repr(C)]
#[derive(Debug)]
pub struct ModuleBuf {
    pub ptr: *mut u8,
    pub len: usize,
    pub cap: usize,
}

impl ModuleBuf {
    pub const EMPTY: ModuleBuf = ModuleBuf { ptr: core::ptr::null_mut(), len: 0, cap: 0 };
}

/// What the previous version hands to `init`: its name, version and snapshot.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawPrevious {
    pub name: RawStr,
    pub version: RawStr,
    pub state: RawBytes,
}

/// Outcome of an entry point.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallStatus(pub u32);

impl CallStatus {
    /// Success; the output buffer holds the result.
    pub const OK: CallStatus = CallStatus(0);
    /// The module returned an error; the output buffer holds its message.
    pub const ERROR: CallStatus = CallStatus(1);
    /// The module panicked and the SDK caught it; the output buffer holds the message.
    pub const PANIC: CallStatus = CallStatus(2);
}

/// A method the module declares: its name and [`RawMethod::READ_ONLY`]
/// when it takes `&self` (it never changes the state).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawMethod {
    pub name: RawStr,
    pub flags: u32,
}

impl RawMethod {
    /// The method only reads the state.
    pub const READ_ONLY: u32 = 1;

    pub const fn new(name: &'static str, flags: u32) -> Self {
        Self { name: RawStr::new(name), flags }
    }
}

/// The host's clocks, read by [`HostApi::now`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawNow {
    /// Wall clock: nanoseconds since the Unix epoch (negative before it).
    pub unix_nanos: i64,
    /// A monotonic clock: nanoseconds since a point fixed for the host process.
    pub monotonic_nanos: u64,
}

/// Log levels passed to [`HostApi::log`], most severe first.
pub mod level {
    pub const ERROR: u32 = 1;
    pub const WARN: u32 = 2;
    pub const INFO: u32 = 3;
    pub const DEBUG: u32 = 4;
    pub const TRACE: u32 = 5;
}

/// The services a host offers a module, as functions that take the
/// [`RawHost::call`] pointer they were lent with.
///
/// Only grows: new services are appended and [`HostApi::size`] says how far
/// this host's table goes, so a module built against a newer table checks a
/// field is present before using it (and a host with a shorter table is
/// still ABI version 2). Every field is an `Option` for the same reason as
/// the descriptor's entry points: `None` is a value the module can refuse.
#[repr(C)]
#[derive(Debug)]
pub struct HostApi {
    /// `size_of::<HostApi>()` in the host's build.
    pub size: u32,
    /// Appends bytes to the reply of the call in progress. Only `handle`
    /// writes a reply; elsewhere the bytes are ignored.
    pub reply: Option<unsafe extern "C" fn(call: *mut c_void, bytes: RawBytes)>,
    /// The host's clocks.
    pub now: Option<unsafe extern "C" fn(call: *mut c_void) -> RawNow>,
    /// A log record at `level` (see [`level`]); the host adds the module,
    /// version, instance and method.
    pub log: Option<unsafe extern "C" fn(call: *mut c_void, level: u32, target: RawStr, message: RawStr)>,
    /// Asks for `method` to be called on this instance with `payload` after
    /// `delay_nanos`. [`CallStatus::OK`], or [`CallStatus::ERROR`] with the
    /// host's reason written to `*reason` (text the host keeps alive until
    /// the entry point in progress returns).
    pub after: Option<
        unsafe extern "C" fn(
            call: *mut c_void,
            delay_nanos: u64,
            method: RawStr,
            payload: RawBytes,
            reason: *mut RawStr,
        ) -> CallStatus,
    >,
    /// The key of the instance this call runs on (empty where there is none).
    pub instance: Option<unsafe extern "C" fn(call: *mut c_void) -> RawStr>,
    // Appended for sessions (issue 9); a module checks `size` before use.
    /// Queues `bytes` for session `session`, delivered after the entry point
    /// returns, in order. [`CallStatus::ERROR`] where pushes are not kept (in
    /// `init`, `snapshot` or `drop_state`).
    pub send: Option<unsafe extern "C" fn(call: *mut c_void, session: u64, bytes: RawBytes) -> CallStatus>,
    /// Queues `bytes` for every session of this instance.
    pub broadcast: Option<unsafe extern "C" fn(call: *mut c_void, bytes: RawBytes) -> CallStatus>,
    /// Closes session `session` with `reason` once what was queued before is delivered.
    pub close: Option<unsafe extern "C" fn(call: *mut c_void, session: u64, reason: RawStr) -> CallStatus>,
}

/// What the host lends each entry point: its table and the pointer that
/// identifies the call in progress to it. Valid for the duration of the
/// entry point only.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawHost {
    pub api: *const HostApi,
    pub call: *mut c_void,
}

/// `init(host, previous, state_out, out)`: `previous` is null for a fresh start.
/// On `OK`, `*state_out` is the new state (never null); otherwise `out` holds the message.
pub type InitFn = unsafe extern "C" fn(
    host: *const RawHost,
    previous: *const RawPrevious,
    state_out: *mut *mut c_void,
    out: *mut ModuleBuf,
) -> CallStatus;

/// `handle(host, state, method, payload, out)`: on `OK` the reply is what
/// the module wrote through [`HostApi::reply`]; otherwise `out` holds the
/// message (and anything written to the reply is dropped).
pub type HandleFn = unsafe extern "C" fn(
    host: *const RawHost,
    state: *mut c_void,
    method: RawStr,
    payload: RawBytes,
    out: *mut ModuleBuf,
) -> CallStatus;

/// `snapshot(host, state, out)`: `out` holds the snapshot or the message.
pub type SnapshotFn =
    unsafe extern "C" fn(host: *const RawHost, state: *const c_void, out: *mut ModuleBuf) -> CallStatus;

/// `drop_state(host, state, out)`: runs the state's destructor.
pub type DropStateFn =
    unsafe extern "C" fn(host: *const RawHost, state: *mut c_void, out: *mut ModuleBuf) -> CallStatus;

/// `on_join(host, state, session, request, out)`, `on_message(host, state,
/// session, message, out)` and `on_leave(host, state, session, empty, out)`:
/// a session of this instance joined (with the query string of its
/// request), sent a message, or left. On an error `out` holds the message.
pub type SessionHookFn = unsafe extern "C" fn(
    host: *const RawHost,
    state: *mut c_void,
    session: u64,
    bytes: RawBytes,
    out: *mut ModuleBuf,
) -> CallStatus;

/// `on_tick(host, state, out)`: the host's periodic tick of this instance.
pub type TickFn =
    unsafe extern "C" fn(host: *const RawHost, state: *mut c_void, out: *mut ModuleBuf) -> CallStatus;

/// `free_buf(buf)`: returns a buffer to the allocator that made it.
pub type FreeBufFn = unsafe extern "C" fn(buf: ModuleBuf);

/// Signature of the exported [`DESCRIPTOR_SYMBOL`].
pub type DescriptorFn = unsafe extern "C" fn() -> *const DescriptorHeader;

/// The part of the descriptor whose layout is frozen forever.
#[repr(C)]
#[derive(Debug)]
pub struct DescriptorHeader {
    /// Always [`MAGIC`].
    pub magic: [u8; 8],
    /// The [`ABI_VERSION`] the module was built against.
    pub abi_version: u32,
    /// `size_of` the full descriptor, as the module saw it.
    pub descriptor_size: u32,
}

/// Everything a host needs to run a module (ABI version 2).
#[repr(C)]
#[derive(Debug)]
pub struct ModuleDescriptor {
    pub header: DescriptorHeader,
    /// `Module::NAME`.
    pub name: RawStr,
    /// `Module::VERSION`.
    pub version: RawStr,
    /// Version of the `hotswap-module` crate the module was built with.
    pub sdk_version: RawStr,
    /// `rustc --version` of the compiler that built the module.
    pub rustc_version: RawStr,
    /// 1 when built with `panic = "unwind"`: only then can the SDK catch panics.
    pub panic_unwind: u8,
    /// The layout number of the state's snapshots, for modules written with
    /// the typed layer; 0 when the module does not declare one (a raw module).
    pub state_layout: u32,
    /// The methods the module declares (`method_count` of them); a raw
    /// module may declare none and still answer any method name.
    pub methods: *const RawMethod,
    pub method_count: usize,
    // The entry points are `Option`s because the descriptor is read from a
    // library the host did not build: a null pointer in a plain `fn` field
    // is undefined behaviour the moment it is read, while `None` is a value
    // the host can refuse (Rust guarantees that `Option<extern "C" fn>` is
    // one pointer, with null as `None`).
    pub init: Option<InitFn>,
    pub handle: Option<HandleFn>,
    pub snapshot: Option<SnapshotFn>,
    pub drop_state: Option<DropStateFn>,
    pub free_buf: Option<FreeBufFn>,
    // Appended for sessions (issue 9). A host reads a field only when
    // `header.descriptor_size` covers it: a module built before has none.
    pub on_join: Option<SessionHookFn>,
    pub on_message: Option<SessionHookFn>,
    pub on_leave: Option<SessionHookFn>,
    pub on_tick: Option<TickFn>,
}

/// The size of an ABI-2 descriptor before the session hooks were appended:
/// the smallest a host accepts.
pub const DESCRIPTOR_BASE_SIZE: usize = core::mem::offset_of!(ModuleDescriptor, on_join);

// The layout promise above, checked at compile time.
const _: () = {
    assert!(size_of::<Option<HandleFn>>() == size_of::<HandleFn>());
    assert!(align_of::<Option<HandleFn>>() == align_of::<HandleFn>());
    assert!(size_of::<Option<FreeBufFn>>() == size_of::<usize>());
};

// SAFETY: a descriptor is an immutable static: its pointers refer to string
// literals, a static method array and functions, valid from any thread.
unsafe impl Sync for ModuleDescriptor {}

// SAFETY: the host's table is an immutable static of function pointers.
unsafe impl Sync for HostApi {}
