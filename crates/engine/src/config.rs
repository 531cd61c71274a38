use std::path::PathBuf;
use std::time::Duration;

/// Settings of an [`Engine`](crate::Engine).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where private copies of module files are made (a fresh subfolder,
    /// mode 0700, removed when the engine is dropped). Default: the system
    /// temporary folder.
    pub private_dir: Option<PathBuf>,
    /// How long a swap waits for busy instances to finish their current
    /// call before it gives up (and the old version keeps serving).
    pub swap_timeout: Duration,
    /// How many retired versions of one module may stay mapped (their code
    /// could not be unloaded) before further swaps of it are refused.
    pub max_resident_retired: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { private_dir: None, swap_timeout: Duration::from_secs(5), max_resident_retired: 8 }
    }
}
