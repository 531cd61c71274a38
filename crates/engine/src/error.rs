//! Errors a host can match on, with messages a person can act on.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// How a module entry point failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Fault {
    /// The module returned `Err(ModuleError)` with this message.
    Error(Box<str>),
    /// The module panicked; the SDK caught it. This is the panic message and
    /// where the panic happened.
    Panic(Box<str>),
}

impl Fault {
    /// The module's own message.
    pub fn message(&self) -> &str {
        match self {
            Fault::Error(message) | Fault::Panic(message) => message,
        }
    }

    pub fn is_panic(&self) -> bool {
        matches!(self, Fault::Panic(_))
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Error(message) => write!(f, "returned an error: {message}"),
            Fault::Panic(message) => write!(f, "panicked: {message}"),
        }
    }
}

/// Why a load, swap, rollback or unload was refused. In every case the
/// version that was serving before keeps serving, with its state untouched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwapError {
    #[error(
        "a swap or dry run of module '{module}' is already in progress; wait for it to finish and try again"
    )]
    SwapInProgress { module: String },

    #[error("module '{module}' is not loaded")]
    UnknownModule { module: String },

    #[error("module '{module}' is already loaded; a saved state can only be restored into a first load")]
    AlreadyLoaded { module: String },

    #[error("module '{module}' has no previous version to roll back to (it has been loaded only once)")]
    NothingToRollBack { module: String },

    #[error("cannot read module file {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: io::Error },

    #[error("module file {} is empty; was it still being written?", path.display())]
    EmptyFile { path: PathBuf },

    #[error(
        "{} is not a shared library: it starts with {found:02x?}, an ELF file starts with [7f, 45, 4c, 46]",
        path.display()
    )]
    NotElf { path: PathBuf, found: Vec<u8> },

    /// The host's own check of the file (see `Engine::load_checked`) said no.
    #[error("{} was rejected: {reason}", path.display())]
    Rejected { path: PathBuf, reason: String },

    #[error("{} cannot be loaded safely: {reason}", path.display())]
    InvalidElf { path: PathBuf, reason: String },

    #[error("cannot create the private directory for module copies: {source}")]
    PrivateDir { source: io::Error },

    #[error("cannot copy {} to {}: {source}", path.display(), to.display())]
    Copy { path: PathBuf, to: PathBuf, source: io::Error },

    #[error("the dynamic loader refused {}: {message}", path.display())]
    Open { path: PathBuf, message: String },

    #[error(
        "{} is not a hotswap module: it exports no `hotswap_module_descriptor` \
         (a module crate calls hotswap_module::export_module!)",
        path.display()
    )]
    NotAModule { path: PathBuf },

    #[error("{} has descriptor magic {found:02x?}, the host expects {expected:02x?}", path.display())]
    BadMagic { path: PathBuf, found: [u8; 8], expected: [u8; 8] },

    /// The module speaks another ABI; the message says which side is older
    /// and which SDK to rebuild the module with.
    #[error("{}", abi_mismatch(path, *module_abi, *host_abi))]
    AbiMismatch { path: PathBuf, module_abi: u32, host_abi: u32 },

    #[error("{} has an unusable descriptor: {reason}", path.display())]
    BadDescriptor { path: PathBuf, reason: String },

    #[error(
        "{} (module '{module}' {version}) was built with panic = \"abort\", so a panic in it would \
         abort this whole process; build it with panic = \"unwind\" (the default)",
        path.display()
    )]
    PanicAbort { path: PathBuf, module: String, version: String },

    #[error(
        "{} is module '{found}', not '{expected}': a file can only be loaded as the module it names \
         in Module::NAME",
        path.display()
    )]
    NameMismatch { path: PathBuf, expected: String, found: String },

    #[error(
        "{resident} retired versions of module '{module}' are still mapped (limit {limit}): their code \
         could not be unloaded, usually because it registered thread-local destructors on threads \
         that are still running; raise EngineConfig::max_resident_retired or restart to reclaim them"
    )]
    TooManyResident { module: String, resident: usize, limit: usize },

    #[error(
        "swap of module '{module}' to {to_version} gave up after {waited:?} waiting for {waiting_for} \
         to finish its call; every instance stays on {from_version}"
    )]
    Timeout {
        module: String,
        from_version: String,
        to_version: String,
        waiting_for: String,
        waited: Duration,
    },

    #[error(
        "module '{module}' {from_version} could not snapshot instance '{instance}': it {fault}; \
         every instance stays on {from_version}"
    )]
    SnapshotFailed { module: String, instance: String, from_version: String, fault: Fault },

    #[error(
        "module '{module}' {to_version} could not take over instance '{instance}' from {from_version}: \
         its init {fault}; every instance stays on {from_version}"
    )]
    MigrationFailed {
        module: String,
        instance: String,
        from_version: String,
        to_version: String,
        fault: Fault,
    },

    #[error(
        "module '{module}' could not restore instance '{instance}' from its saved state of version \
         {saved_version}: its init {fault}; nothing was loaded"
    )]
    RestoreFailed { module: String, instance: String, saved_version: String, fault: Fault },

    #[error("instance '{instance}' of module '{module}' has already started; its state is not replaced")]
    AlreadyStarted { module: String, instance: String },

    #[error("the saved state is of module '{found}', not '{module}'; nothing was loaded")]
    SnapshotOfAnotherModule { module: String, found: String },

    /// A saved timer names an instance the saved state does not hold (a
    /// snapshot the engine took never has one): the state was changed or damaged.
    #[error(
        "the saved state of module '{module}' has a timer for '{method}' on instance '{instance}', \
         which it holds no state for; nothing was loaded"
    )]
    TimerOfUnknownInstance { module: String, instance: String, method: String },

    /// The trial `init(None)` that every load makes of the new version failed:
    /// instances started later would fail the same way.
    #[error("module '{module}' {version} cannot start a fresh instance: its init {fault}")]
    InitFailed { module: String, version: String, fault: Fault },
}

/// The SDK whose ABI this host runs. The engine and the SDK are released
/// together under one version number (the workspace's), so the engine's own
/// version names it.
const MATCHING_SDK: &str = env!("CARGO_PKG_VERSION");

/// [`SwapError::AbiMismatch`]'s message: an older module is rebuilt with this
/// host's SDK; a newer one needs a newer host (or that same rebuild).
fn abi_mismatch(path: &std::path::Path, module_abi: u32, host_abi: u32) -> String {
    let path = path.display();
    if module_abi < host_abi {
        format!(
            "{path} was built for ABI {module_abi}, this host runs ABI {host_abi}: rebuild the module with \
             hotswap-module {MATCHING_SDK} (the SDK of ABI {host_abi}); modules of older ABIs cannot be loaded"
        )
    } else {
        format!(
            "{path} was built for module ABI {module_abi}, this host expects ABI {host_abi}: its SDK is newer \
             than this host; run it on a host of ABI {module_abi}, or rebuild the module with \
             hotswap-module {MATCHING_SDK}"
        )
    }
}

/// Why a call did not return a reply.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    #[error("module '{module}' is not loaded")]
    UnknownModule { module: String },

    /// The module's `handle` returned `Err`: a refusal the caller should see.
    #[error("{module} {version} refused '{method}': {message}")]
    Refused { module: String, version: String, method: String, message: String },

    /// The module's `handle` panicked. The instance keeps the state as the
    /// panic left it; other instances are unaffected.
    #[error("{module} {version} panicked in '{method}': {message}")]
    Panicked { module: String, version: String, method: String, message: String },

    /// The instance was removed with `Engine::remove_instance` after this
    /// handle was made. `Engine::call` never returns this: it starts a new instance.
    #[error("instance '{instance}' of module '{module}' was removed; get a new handle to start it again")]
    InstanceRemoved { module: String, instance: String },

    /// The instance did not exist yet and the module's `init(None)` failed.
    #[error("{module} {version} could not start instance '{instance}': its init {fault}")]
    InitFailed { module: String, version: String, instance: String, fault: Fault },

    /// The call would have created a new instance past the module's limit
    /// (`Engine::set_max_instances`). Existing instances are not affected.
    #[error(
        "module '{module}' has reached its limit of {limit} instances (max_instances), so no new instance \
         is started; existing instances keep working. Remove instances that are no longer needed \
         (`hotswap remove-instance {module} KEY`) or raise the limit"
    )]
    TooManyInstances { module: String, limit: usize },
}

/// Why a snapshot of a module's instances could not be taken.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("module '{module}' is not loaded")]
    UnknownModule { module: String },

    #[error("module '{module}' {version} could not snapshot instance '{instance}': it {fault}")]
    Failed { module: String, version: String, instance: String, fault: Fault },
}
