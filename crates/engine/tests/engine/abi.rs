//! The module boundary under hostile input: a descriptor with a null entry
//! point, and bytes that are not UTF-8 where the ABI promises UTF-8. The
//! probes call a module's entry points through its descriptor, as a broken
//! or hostile host would, with no engine in between.

use std::ffi::c_void;
use std::path::Path;

use hotswap::SwapError;
use hotswap_abi::{
    CallStatus, DESCRIPTOR_SYMBOL, DescriptorFn, HostApi, ModuleBuf, ModuleDescriptor, RawBytes, RawHost,
    RawPrevious, RawStr,
};
use hotswap_test_modules::{COUNTER_NULL_HANDLE, COUNTER_V1};
use libloading::Library;

use crate::{call_text, engine_in};

#[test]
fn a_null_entry_point_is_refused_at_load_naming_it_and_the_old_version_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    engine.load("counter", COUNTER_V1).unwrap();
    call_text(&engine, "alice", "add", "40");

    let error = engine.load("counter", COUNTER_NULL_HANDLE).expect_err("a null handle must be refused");
    assert!(
        matches!(&error, SwapError::BadDescriptor { reason, .. } if reason.contains("handle")),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("`handle`") && message.contains("null"),
        "the refusal names the entry point: {message}"
    );

    assert_eq!(call_text(&engine, "alice", "version", ""), "1.0.0");
    assert_eq!(call_text(&engine, "alice", "add", "2"), "42");
    assert_eq!(engine.status().module("counter").unwrap().swaps, 0);

    // A first load is refused the same way: nothing is published.
    let fresh = engine_in(&dir.path().join("fresh"));
    let error = fresh.load("counter", COUNTER_NULL_HANDLE).expect_err("a null handle must be refused");
    assert!(matches!(error, SwapError::BadDescriptor { .. }), "{error:?}");
    assert!(fresh.status().module("counter").is_none());
}

#[test]
fn the_sdk_refuses_a_method_name_that_is_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let module = RawModule::open(COUNTER_V1, dir.path());
    let state = module.init(None).expect("a fresh counter");
    assert_eq!(module.handle(state, b"add", b"5"), (CallStatus::OK, "5".to_owned()));

    for bad in [&b"\xff"[..], b"add\xfe", b"\xed\xa0\x80", b"\xc3"] {
        let (status, message) = module.handle(state, bad, b"1");
        assert_eq!(status, CallStatus::ERROR, "method {bad:02x?}: {message}");
        assert!(message.contains("method name") && message.contains("UTF-8"), "method {bad:02x?}: {message}");
    }
    // The refusals left the state alone.
    assert_eq!(module.handle(state, b"get", b""), (CallStatus::OK, "5".to_owned()));
    module.drop_state(state);
}

#[test]
fn the_sdk_refuses_a_previous_name_or_version_that_is_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let module = RawModule::open(COUNTER_V1, dir.path());
    let total = 7u64.to_le_bytes();
    let good = module.init(Some((b"counter", b"1.0.0", &total))).expect("a valid previous");
    assert_eq!(module.handle(good, b"get", b""), (CallStatus::OK, "7".to_owned()));
    module.drop_state(good);

    for (name, version, field) in
        [(&b"count\xff"[..], &b"1.0.0"[..], "name"), (b"counter", b"1.\xc0", "version")]
    {
        let message = module.init(Some((name, version, &total))).expect_err("bad UTF-8 must be refused");
        assert!(message.contains(field) && message.contains("UTF-8"), "previous {field}: {message}");
    }
}

/// A module opened with libloading alone, its entry points called by hand.
struct RawModule {
    descriptor: &'static ModuleDescriptor,
    _library: Library,
}

impl RawModule {
    fn open(module_file: &str, dir: &Path) -> RawModule {
        // A private copy, so this library is not shared with an engine's.
        let copy = dir.join("raw-module.so");
        std::fs::copy(module_file, &copy).unwrap();
        // SAFETY: a hotswap module built from this tree; its only initialisers are std's.
        let library = unsafe { Library::new(&copy) }.expect("dlopen the module");
        // SAFETY: every hotswap module exports the descriptor function with this signature.
        let describe: DescriptorFn = *unsafe { library.get::<DescriptorFn>(DESCRIPTOR_SYMBOL) }.unwrap();
        // SAFETY: the module is built against this tree's ABI, so the pointer is to
        // its static descriptor. It lives as long as the library, which this value
        // keeps open; the 'static reference is never handed out beyond it.
        let descriptor = unsafe { &*describe().cast::<ModuleDescriptor>() };
        RawModule { descriptor, _library: library }
    }

    /// `init` with a previous (name, version, state) given as raw bytes.
    fn init(&self, previous: Option<(&[u8], &[u8], &[u8])>) -> Result<*mut c_void, String> {
        let raw = previous.map(|(name, version, state)| RawPrevious {
            name: RawStr { ptr: name.as_ptr(), len: name.len() },
            version: RawStr { ptr: version.as_ptr(), len: version.len() },
            state: RawBytes::new(state),
        });
        let mut state = std::ptr::null_mut();
        let mut out = ModuleBuf::EMPTY;
        let previous = raw.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
        // SAFETY: every pointer refers to a live local for the whole call.
        let status = unsafe {
            (self.descriptor.init.expect("the SDK fills every entry point"))(
                std::ptr::null(),
                previous,
                &mut state,
                &mut out,
            )
        };
        let message = self.take(out);
        if status == CallStatus::OK { Ok(state) } else { Err(message) }
    }

    /// `handle` with the method name given as raw bytes.
    fn handle(&self, state: *mut c_void, method: &[u8], payload: &[u8]) -> (CallStatus, String) {
        let method = RawStr { ptr: method.as_ptr(), len: method.len() };
        let mut out = ModuleBuf::EMPTY;
        let mut reply = Vec::<u8>::new();
        let host = RawHost { api: &PROBE_HOST, call: std::ptr::from_mut(&mut reply).cast() };
        // SAFETY: `state` came from this module's init and is used by this
        // thread only; method, payload and the host outlive the call.
        let status = unsafe {
            (self.descriptor.handle.expect("the SDK fills every entry point"))(
                &host,
                state,
                method,
                RawBytes::new(payload),
                &mut out,
            )
        };
        match status {
            CallStatus::OK => (status, String::from_utf8_lossy(&reply).into_owned()),
            _ => (status, self.take(out)),
        }
    }

    fn drop_state(&self, state: *mut c_void) {
        let mut out = ModuleBuf::EMPTY;
        // SAFETY: `state` came from this module's init and is not used again.
        let status = unsafe {
            (self.descriptor.drop_state.expect("the SDK fills every entry point"))(
                std::ptr::null(),
                state,
                &mut out,
            )
        };
        assert_eq!(status, CallStatus::OK, "{}", self.take(out));
    }

    /// The output buffer as text, given back to the module that made it.
    fn take(&self, out: ModuleBuf) -> String {
        let text = if out.ptr.is_null() {
            String::new()
        } else {
            // SAFETY: a non-null buffer from the module is a live Vec<u8> until free_buf.
            String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(out.ptr, out.len) }).into_owned()
        };
        // SAFETY: the buffer came from this module and is returned once.
        unsafe { (self.descriptor.free_buf.expect("the SDK fills every entry point"))(out) };
        text
    }
}

/// The probe's host: a reply buffer (the call pointer is a `Vec<u8>`) and
/// no other service.
static PROBE_HOST: HostApi = HostApi {
    size: size_of::<HostApi>() as u32,
    reply: Some(probe_reply),
    now: None,
    log: None,
    after: None,
    instance: None,
    send: None,
    broadcast: None,
    close: None,
};

unsafe extern "C" fn probe_reply(call: *mut c_void, bytes: RawBytes) {
    // SAFETY: the probe lends a `Vec<u8>` as the call pointer, and the
    // module's bytes are readable during this call.
    unsafe { (*call.cast::<Vec<u8>>()).extend_from_slice(bytes.as_slice()) };
}
