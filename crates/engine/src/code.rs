//! One loaded version of a module: its private copy, its library handle and
//! safe wrappers around its entry points.
//!
//! The entry points have preconditions (a state belongs to one version, is
//! used by one thread at a time and dropped once) that the types here carry
//! instead of the callers: a state exists only as a [`ModuleState`], which
//! owns its version's code and whose `Drop` is the only `drop_state`.

use std::ffi::c_void;
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotswap_abi::{
    ABI_VERSION, CallStatus, DESCRIPTOR_BASE_SIZE, DESCRIPTOR_SYMBOL, DescriptorFn, DropStateFn, FreeBufFn,
    HandleFn, InitFn, MAGIC, ModuleBuf, ModuleDescriptor, RawBytes, RawMethod, RawPrevious, RawStr,
    SessionHookFn, SnapshotFn, TickFn,
};
use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};

use crate::error::{Fault, SwapError};
use crate::host::{HostCall, Push, TimerRequests};

/// What a module says about itself, copied out of its descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ModuleInfo {
    /// `Module::NAME`.
    pub name: String,
    /// `Module::VERSION`.
    pub version: String,
    /// Version of `hotswap-module` the module was built with.
    pub sdk_version: String,
    /// `rustc --version` of the compiler that built the module.
    pub rustc_version: String,
    /// The layout number of its snapshots, if it declares one (typed modules do).
    pub state_layout: Option<u32>,
    /// The methods it declares (a raw module may declare none).
    pub methods: Vec<MethodInfo>,
    /// The file the module was loaded from.
    pub file: PathBuf,
}

/// A method a module declares.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MethodInfo {
    pub name: String,
    /// It takes `&self`: it never changes the state.
    pub read_only: bool,
}

/// The entry points of a verified module, copied out of its descriptor once
/// each was checked to be present.
#[derive(Clone, Copy)]
struct EntryPoints {
    init: InitFn,
    handle: HandleFn,
    snapshot: SnapshotFn,
    drop_state: DropStateFn,
    free_buf: FreeBufFn,
    /// The session hooks; `None` for a module whose descriptor predates them.
    on_join: Option<SessionHookFn>,
    on_message: Option<SessionHookFn>,
    on_leave: Option<SessionHookFn>,
    on_tick: Option<TickFn>,
}

/// What an instance is asked to do: a call of a method, or one of the
/// session hooks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Invocation<'a> {
    Method { method: &'a str, payload: &'a [u8] },
    Join { session: u64, request: &'a [u8] },
    Message { session: u64, message: &'a [u8] },
    Leave { session: u64 },
    Tick,
}

impl Invocation<'_> {
    /// The method's name, or the hook's, for logs and errors.
    pub fn name(&self) -> &str {
        match self {
            Invocation::Method { method, .. } => method,
            Invocation::Join { .. } => "on_join",
            Invocation::Message { .. } => "on_message",
            Invocation::Leave { .. } => "on_leave",
            Invocation::Tick => "on_tick",
        }
    }
}

/// What a call asked of the host besides its reply: timers and pushes.
pub(crate) struct Effects<'a> {
    pub timers: &'a mut TimerRequests,
    pub pushes: &'a mut Vec<Push>,
}

/// The state of one started instance: a `Box<T>` the module handed out from
/// `init`, owned by the host.
///
/// It keeps the version that made it alive (an `Arc<Code>`), so it can only
/// be used and dropped by its own version's code, never outlives that code,
/// and its `Drop` is the only place `drop_state` is called. It is neither
/// `Copy` nor `Clone`, so it is dropped exactly once:
///
/// ```compile_fail,E0382
/// fn drop_twice(state: hotswap::ModuleState) {
///     drop(state);
///     drop(state); // use of moved value
/// }
/// ```
///
/// ```compile_fail,E0599
/// fn two_owners(state: hotswap::ModuleState) -> (hotswap::ModuleState, hotswap::ModuleState) {
///     (state.clone(), state) // no method `clone`
/// }
/// ```
///
/// Calls take `&mut self` and snapshots `&self`, and the type is `Send` but
/// not `Sync`: one thread at a time uses a state, which is what the module's
/// `Module: Send` (not `Sync`) allows.
pub struct ModuleState {
    code: Arc<Code>,
    ptr: NonNull<c_void>,
    /// The key of the instance it belongs to, told to the module by the host's table.
    instance: Box<str>,
}

// SAFETY: the SDK requires `Module: Send`, so the state behind the pointer may
// move to another thread; `Arc<Code>` is `Send`. `ModuleState` is not `Sync`
// (the pointer is not), so two threads never reach the state at once.
unsafe impl Send for ModuleState {}

impl fmt::Debug for ModuleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = &self.code.info;
        f.debug_struct("ModuleState").field("module", &info.name).field("version", &info.version).finish()
    }
}

impl ModuleState {
    /// The version this state belongs to.
    pub(crate) fn code(&self) -> &Arc<Code> {
        &self.code
    }

    /// One call of a method or a session hook. Timers and pushes the
    /// module asks for are added to `effects`, whatever the outcome (its
    /// state changes are kept on an error too). A hook the module does not
    /// have answers `Ok` with no reply.
    pub(crate) fn invoke(&mut self, what: Invocation<'_>, effects: Effects<'_>) -> Result<Vec<u8>, Fault> {
        let code = &*self.code;
        let mut host = HostCall::new(&code.info.name, &code.info.version, &self.instance, what.name());
        host.timers = Some(effects.timers);
        host.pushes = Some(effects.pushes);
        let raw_host = host.raw();
        let state = self.ptr.as_ptr();
        let mut out = ModuleBuf::EMPTY;
        let entry = &code.entry;
        // Every entry point below is called on a state that came from this
        // version's `init` (a `ModuleState` is only made there, with its
        // code); the code is loaded while `self.code` lives, `&mut self` is
        // the only access to the state, and the method, payload, bytes and
        // `host` outlive the call; `out` is a live local.
        let hook = |hook: Option<SessionHookFn>, session: u64, bytes: &[u8], out: &mut ModuleBuf| {
            // SAFETY: see above.
            hook.map(|hook| unsafe { hook(&raw_host, state, session, RawBytes::new(bytes), out) })
        };
        let status = match what {
            // SAFETY: see above.
            Invocation::Method { method, payload } => Some(unsafe {
                (entry.handle)(&raw_host, state, RawStr::new(method), RawBytes::new(payload), &mut out)
            }),
            Invocation::Join { session, request } => hook(entry.on_join, session, request, &mut out),
            Invocation::Message { session, message } => hook(entry.on_message, session, message, &mut out),
            Invocation::Leave { session } => hook(entry.on_leave, session, &[], &mut out),
            // SAFETY: see above.
            Invocation::Tick => entry.on_tick.map(|tick| unsafe { tick(&raw_host, state, &mut out) }),
        };
        match status {
            None | Some(CallStatus::OK) => Ok(std::mem::take(&mut host.reply)),
            Some(failed) => code.finish(failed, out),
        }
    }

    /// The state's snapshot, copied into host memory.
    pub(crate) fn snapshot(&self) -> Result<Vec<u8>, Fault> {
        self.with_snapshot(<[u8]>::to_vec)
    }

    /// Lends the snapshot to `use_it` straight from the module's buffer,
    /// saving a copy of the whole state when it is only passed on.
    pub(crate) fn with_snapshot<R>(&self, use_it: impl FnOnce(&[u8]) -> R) -> Result<R, Fault> {
        let code = &*self.code;
        let mut host = HostCall::new(&code.info.name, &code.info.version, &self.instance, "snapshot");
        let raw_host = host.raw();
        let mut out = ModuleBuf::EMPTY;
        // SAFETY: as in `handle`; `&self` on a type that is not `Sync` means
        // no call mutates the state meanwhile.
        let status = unsafe { (code.entry.snapshot)(&raw_host, self.ptr.as_ptr(), &mut out) };
        code.finish_with(status, out, use_it)
    }
}

impl Drop for ModuleState {
    fn drop(&mut self) {
        let code = &*self.code;
        let mut host = HostCall::new(&code.info.name, &code.info.version, &self.instance, "drop");
        let raw_host = host.raw();
        let mut out = ModuleBuf::EMPTY;
        // SAFETY: the state came from this version's `init`, whose code is
        // still loaded (`self.code` is dropped after this); nothing uses the
        // state after `drop`, and `drop` runs once. `host` outlives the call.
        let status = unsafe { (code.entry.drop_state)(&raw_host, self.ptr.as_ptr(), &mut out) };
        if let Err(fault) = code.finish(status, out) {
            let info = &code.info;
            tracing::warn!(module = %info.name, version = %info.version, "dropping a state {fault}");
        }
    }
}

/// What `init` is handed when a state is taken over: who wrote the snapshot, and the snapshot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Previous<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub state: &'a [u8],
}

/// How long each step of opening a module took.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OpenTimings {
    pub copy: Duration,
    pub open_and_verify: Duration,
}

/// A loaded, verified module version. Its entry points stay valid for as long
/// as this value lives; dropping it closes the library.
pub(crate) struct Code {
    pub info: ModuleInfo,
    pub private_copy: PathBuf,
    entry: EntryPoints,
    library: Option<Library>,
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Code").field("info", &self.info).field("private_copy", &self.private_copy).finish()
    }
}

impl Code {
    /// Copies `source` to `private_copy`, opens the copy and verifies that it
    /// is module `expected_name` built for this host's ABI.
    ///
    /// The copy has a name no other version uses: `dlopen` of a path that is
    /// already loaded returns the already-loaded library, and rewriting a
    /// mapped file in place (a compiler writing the next build) can crash the
    /// process with SIGBUS. We map only our own copy, which nobody rewrites.
    ///
    /// `check` looks at the private copy before it is opened (a checksum, a
    /// signature): it sees exactly the bytes that will be mapped.
    pub fn open(
        expected_name: &str,
        source: &Path,
        private_copy: PathBuf,
        check: &dyn Fn(&Path) -> Result<(), String>,
    ) -> Result<(Code, OpenTimings), SwapError> {
        let started = Instant::now();
        check_looks_like_elf(source)?;
        fs::copy(source, &private_copy).map_err(|source_err| SwapError::Copy {
            path: source.to_owned(),
            to: private_copy.clone(),
            source: source_err,
        })?;
        if let Err(reason) = check(&private_copy) {
            let _ = fs::remove_file(&private_copy);
            return Err(SwapError::Rejected { path: source.to_owned(), reason });
        }
        let copied = Instant::now();
        let code = Self::open_copy(expected_name, source, &private_copy)?;
        let timings = OpenTimings { copy: copied - started, open_and_verify: copied.elapsed() };
        Ok((code, timings))
    }

    /// Opens and verifies a private copy made by [`Code::open`]; removes the
    /// copy if it is refused.
    pub fn open_copy(expected_name: &str, source: &Path, private_copy: &Path) -> Result<Code, SwapError> {
        let result = check_segments_fit(source, private_copy)
            .and_then(|()| Self::open_checked_copy(expected_name, source, private_copy));
        if result.is_err() {
            let _ = fs::remove_file(private_copy);
        }
        result
    }

    fn open_checked_copy(expected_name: &str, source: &Path, private_copy: &Path) -> Result<Code, SwapError> {
        // SAFETY: dlopen runs the library's initialisers. A hotswap module is
        // a Rust cdylib whose only initialisers are std's; the operator chose
        // to load this file. RTLD_LOCAL keeps its symbols out of the global
        // namespace so versions never resolve each other's symbols.
        let library = unsafe { Library::open(Some(private_copy), RTLD_NOW | RTLD_LOCAL) }
            .map_err(|err| SwapError::Open { path: source.to_owned(), message: loader_message(&err) })?;

        // SAFETY: every hotswap module exports this symbol with the
        // `DescriptorFn` signature; a library that exports something else
        // under this name is not one we can run safely anyway. Read as an
        // `Option`, a symbol whose address is null is `None`, not a function
        // we would call.
        let describe: DescriptorFn = unsafe { library.get::<Option<DescriptorFn>>(DESCRIPTOR_SYMBOL) }
            .ok()
            .and_then(|symbol| *symbol)
            .ok_or_else(|| SwapError::NotAModule { path: source.to_owned() })?;

        // SAFETY: the descriptor function only returns a pointer to a static.
        let header_ptr = unsafe { describe() };
        // SAFETY: the pointer is null or points at a static descriptor whose
        // header layout is frozen for every ABI version.
        let header = unsafe { header_ptr.as_ref() }.ok_or_else(|| SwapError::BadDescriptor {
            path: source.to_owned(),
            reason: "the descriptor pointer is null".into(),
        })?;
        if header.magic != MAGIC {
            return Err(SwapError::BadMagic {
                path: source.to_owned(),
                found: header.magic,
                expected: MAGIC,
            });
        }
        if header.abi_version != ABI_VERSION {
            return Err(SwapError::AbiMismatch {
                path: source.to_owned(),
                module_abi: header.abi_version,
                host_abi: ABI_VERSION,
            });
        }
        // Fields appended since (the session hooks) are read only when the
        // descriptor covers them: a module built before has none.
        let expected_size = DESCRIPTOR_BASE_SIZE;
        if (header.descriptor_size as usize) < expected_size {
            return Err(SwapError::BadDescriptor {
                path: source.to_owned(),
                reason: format!(
                    "the descriptor is {} bytes, ABI {ABI_VERSION} needs {expected_size}",
                    header.descriptor_size
                ),
            });
        }
        let descriptor = &copy_descriptor(header_ptr, header.descriptor_size as usize);
        let text = |field: &str, raw: RawStr| -> Result<String, SwapError> {
            // SAFETY: descriptor strings point at string literals in the
            // library, valid while it is loaded; `to_str` checks the UTF-8.
            let text = unsafe { raw.to_str() }.map_err(|_| SwapError::BadDescriptor {
                path: source.to_owned(),
                reason: format!("its {field} is not valid UTF-8"),
            })?;
            Ok(text.to_owned())
        };
        let info = ModuleInfo {
            name: text("name", descriptor.name)?,
            version: text("version", descriptor.version)?,
            sdk_version: text("sdk version", descriptor.sdk_version)?,
            rustc_version: text("rustc version", descriptor.rustc_version)?,
            state_layout: (descriptor.state_layout != 0).then_some(descriptor.state_layout),
            methods: read_methods(descriptor, source)?,
            file: source.to_owned(),
        };
        // A null entry point is refused here, before anything could call it.
        let entry = EntryPoints {
            init: required(descriptor.init, "init", source)?,
            handle: required(descriptor.handle, "handle", source)?,
            snapshot: required(descriptor.snapshot, "snapshot", source)?,
            drop_state: required(descriptor.drop_state, "drop_state", source)?,
            free_buf: required(descriptor.free_buf, "free_buf", source)?,
            // Optional: `None` in a descriptor that predates them, or a module without sessions.
            on_join: descriptor.on_join,
            on_message: descriptor.on_message,
            on_leave: descriptor.on_leave,
            on_tick: descriptor.on_tick,
        };
        if descriptor.panic_unwind != 1 {
            return Err(SwapError::PanicAbort {
                path: source.to_owned(),
                module: info.name,
                version: info.version,
            });
        }
        if info.name != expected_name {
            return Err(SwapError::NameMismatch {
                path: source.to_owned(),
                expected: expected_name.to_owned(),
                found: info.name,
            });
        }
        Ok(Code { info, private_copy: private_copy.to_owned(), entry, library: Some(library) })
    }

    /// Starts a state on this version: fresh, or from a previous version's
    /// snapshot. The state keeps this version alive until it is dropped.
    pub fn init(
        self: &Arc<Self>,
        instance: &str,
        previous: Option<Previous<'_>>,
    ) -> Result<ModuleState, Fault> {
        let raw_previous = previous.map(|previous| RawPrevious {
            name: RawStr::new(previous.name),
            version: RawStr::new(previous.version),
            state: RawBytes::new(previous.state),
        });
        let previous_ptr = raw_previous.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
        let mut state = std::ptr::null_mut();
        let mut host = HostCall::new(&self.info.name, &self.info.version, instance, "init");
        let raw_host = host.raw();
        let mut out = ModuleBuf::EMPTY;
        // SAFETY: `init` is this library's entry point, valid while `self`
        // lives; every pointer refers to a live local for the whole call.
        let status = unsafe { (self.entry.init)(&raw_host, previous_ptr, &mut state, &mut out) };
        self.finish(status, out)?;
        let ptr = NonNull::new(state).ok_or_else(|| {
            Fault::Error("init reported success but handed out no state (a null pointer)".into())
        })?;
        Ok(ModuleState { code: self.clone(), ptr, instance: instance.into() })
    }

    /// Copies the module's output buffer into host memory.
    fn finish(&self, status: CallStatus, out: ModuleBuf) -> Result<Vec<u8>, Fault> {
        self.finish_with(status, out, <[u8]>::to_vec)
    }

    /// Hands the module's output to `use_it` (or turns it into a fault), then
    /// gives the buffer back to the module's allocator: each side frees what
    /// it made.
    fn finish_with<R>(
        &self,
        status: CallStatus,
        out: ModuleBuf,
        use_it: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, Fault> {
        let bytes = if out.ptr.is_null() {
            &[][..]
        } else {
            // SAFETY: a non-null ModuleBuf describes a live Vec the module
            // just handed us; it stays alive until we call free_buf below.
            unsafe { std::slice::from_raw_parts(out.ptr, out.len) }
        };
        let result = match status {
            CallStatus::OK => Ok(use_it(bytes)),
            CallStatus::ERROR => Err(Fault::Error(String::from_utf8_lossy(bytes).into())),
            CallStatus::PANIC => Err(Fault::Panic(String::from_utf8_lossy(bytes).into())),
            CallStatus(other) => Err(Fault::Panic(format!("module returned unknown status {other}").into())),
        };
        if !out.ptr.is_null() {
            // SAFETY: `out` came from this module and is returned exactly once;
            // `bytes` is not used after this point.
            unsafe { (self.entry.free_buf)(out) };
        }
        result
    }

    /// Closes the library. Whether its code really left memory is a separate
    /// question (see `maps`); dlclose is a no-op when the library registered
    /// a thread-local destructor that has not run yet.
    pub fn close(mut self) -> Result<(), String> {
        match self.library.take() {
            Some(library) => library.close().map_err(|err| loader_message(&err)),
            None => Ok(()),
        }
    }
}

/// The module's descriptor, copied out of the library: its first
/// `module_size` bytes (as many as the module's build has), and zeros —
/// null pointers and `None` entry points — for fields appended since.
/// Reading it through a reference to a full `ModuleDescriptor` would reach
/// past the end of a smaller static.
fn copy_descriptor(header: *const hotswap_abi::DescriptorHeader, module_size: usize) -> ModuleDescriptor {
    let mut copy = std::mem::MaybeUninit::<ModuleDescriptor>::zeroed();
    let len = module_size.min(size_of::<ModuleDescriptor>());
    // SAFETY: the caller checked magic and ABI version, and that the module
    // says its descriptor is at least the base size: `len` bytes from the
    // header are its static descriptor, readable while the library is
    // loaded, and they do not overlap our local copy.
    unsafe { std::ptr::copy_nonoverlapping(header.cast::<u8>(), copy.as_mut_ptr().cast::<u8>(), len) };
    // SAFETY: every field of a descriptor is valid as all zeros (null
    // pointers, zero counts, `None` for `Option<fn>`), and the bytes copied
    // over them are the module's own descriptor of the same ABI version.
    unsafe { copy.assume_init() }
}

/// The methods a descriptor declares, checked: a null array with a count,
/// or a name that is not UTF-8, refuses the module.
fn read_methods(descriptor: &ModuleDescriptor, source: &Path) -> Result<Vec<MethodInfo>, SwapError> {
    if descriptor.method_count == 0 {
        return Ok(Vec::new());
    }
    let bad = |reason: String| SwapError::BadDescriptor { path: source.to_owned(), reason };
    if descriptor.methods.is_null() {
        return Err(bad(format!("it declares {} methods but no method list", descriptor.method_count)));
    }
    // SAFETY: a non-null method list of `method_count` entries is a static
    // array in the library, valid while it is loaded.
    let methods =
        unsafe { std::slice::from_raw_parts::<RawMethod>(descriptor.methods, descriptor.method_count) };
    methods
        .iter()
        .map(|method| {
            // SAFETY: method names point at string literals in the library;
            // `to_str` checks the UTF-8.
            let name = unsafe { method.name.to_str() }
                .map_err(|_| bad("one of its method names is not valid UTF-8".into()))?;
            Ok(MethodInfo { name: name.to_owned(), read_only: method.flags & RawMethod::READ_ONLY != 0 })
        })
        .collect()
}

/// An entry point the descriptor must have; a null one is refused by name.
fn required<F>(entry_point: Option<F>, name: &str, source: &Path) -> Result<F, SwapError> {
    entry_point.ok_or_else(|| SwapError::BadDescriptor {
        path: source.to_owned(),
        reason: format!(
            "its `{name}` entry point is null; a module built with hotswap_module::export_module! \
             has all five, so rebuild it with the SDK"
        ),
    })
}

/// The loader's own words for a failed `dlopen` or `dlclose`. libloading's
/// error says only which call failed ("dlopen failed") and keeps `dlerror()`'s
/// text (the missing dependency, the undefined symbol) as its source.
fn loader_message(err: &libloading::Error) -> String {
    match std::error::Error::source(err) {
        Some(reason) => format!("{err}: {reason}"),
        None => err.to_string(),
    }
}

/// Refuses files the dynamic loader should never see: missing, empty, or not ELF.
fn check_looks_like_elf(path: &Path) -> Result<(), SwapError> {
    let unreadable = |source| SwapError::Unreadable { path: path.to_owned(), source };
    let mut file = fs::File::open(path).map_err(unreadable)?;
    let mut magic = [0u8; 4];
    let mut read = 0;
    while read < magic.len() {
        match file.read(&mut magic[read..]).map_err(unreadable)? {
            0 => break,
            n => read += n,
        }
    }
    if read == 0 {
        return Err(SwapError::EmptyFile { path: path.to_owned() });
    }
    if magic[..read] != b"\x7fELF"[..read] || read < magic.len() {
        return Err(SwapError::NotElf { path: path.to_owned(), found: magic[..read].to_vec() });
    }
    Ok(())
}

#[cfg(target_pointer_width = "64")]
type ElfHeader = object::elf::FileHeader64<object::Endianness>;
#[cfg(target_pointer_width = "32")]
type ElfHeader = object::elf::FileHeader32<object::Endianness>;

/// Refuses a library whose loadable segments reach past the end of the file.
///
/// The dynamic loader maps each `PT_LOAD` segment straight from the file and
/// does not compare it with the file's length: pages past the end are
/// mapped, and the first touch of one kills the process with SIGBUS. A
/// truncated file (a copy that was cut short, a build still being written)
/// would do exactly that, so the headers are checked first. `copy` is our
/// private copy, which nobody else writes, so it cannot change after the check.
fn check_segments_fit(source: &Path, copy: &Path) -> Result<(), SwapError> {
    use object::read::elf::{FileHeader, ProgramHeader};

    let invalid = |reason: String| SwapError::InvalidElf { path: source.to_owned(), reason };
    let file =
        fs::File::open(copy).map_err(|err| SwapError::Unreadable { path: copy.to_owned(), source: err })?;
    let file_len =
        file.metadata().map_err(|err| SwapError::Unreadable { path: copy.to_owned(), source: err })?.len();
    let data = object::ReadCache::new(file);
    let header = ElfHeader::parse(&data)
        .map_err(|err| invalid(format!("its ELF header is unreadable or not {}-bit ({err})", usize::BITS)))?;
    let endian = header.endian().map_err(|err| invalid(format!("its ELF header is unreadable ({err})")))?;
    if header.e_type(endian) != object::elf::ET_DYN {
        return Err(invalid(format!(
            "it is not a shared library (ELF type {}, a shared library has type {})",
            header.e_type(endian),
            object::elf::ET_DYN
        )));
    }
    let segments = header.program_headers(endian, &data).map_err(|err| {
        invalid(format!("its program headers are unreadable, the file may be truncated ({err})"))
    })?;
    for segment in segments.iter().filter(|segment| segment.p_type(endian) == object::elf::PT_LOAD) {
        #[allow(clippy::useless_conversion, reason = "the fields are u32 in 32-bit ELF")]
        let (offset, size) = (u64::from(segment.p_offset(endian)), u64::from(segment.p_filesz(endian)));
        match offset.checked_add(size) {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(invalid(format!(
                    "a loadable segment needs bytes {offset}..{} but the file has {file_len}; \
                     it is truncated or still being written",
                    offset.saturating_add(size)
                )));
            }
        }
    }
    Ok(())
}
