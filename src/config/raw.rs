//! The config file as written: the TOML tables, strict (an unknown key is
//! an error), with the defaults of what may be left out. `Config::parse`
//! (`config.rs`) validates them into a [`Config`](super::Config).

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) allowed_dirs: Vec<PathBuf>,
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) state: RawState,
    #[serde(default)]
    pub(super) engine: RawEngine,
    #[serde(default)]
    pub(super) upgrade: RawUpgrade,
    #[serde(default, rename = "module")]
    pub(super) modules: Vec<RawModule>,
    #[serde(default, rename = "route")]
    pub(super) routes: Vec<RawRoute>,
    #[serde(default, rename = "socket")]
    pub(super) sockets: Vec<super::socket::RawSocket>,
    #[serde(default, rename = "static")]
    pub(super) statics: Vec<super::static_dir::RawStatic>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: String,
    #[serde(default = "default_max_body")]
    pub(super) max_body: String,
    #[serde(default = "default_body_timeout")]
    pub(super) body_timeout: String,
    #[serde(default = "default_max_connections")]
    pub(super) max_connections: usize,
    #[serde(default = "default_shutdown_timeout")]
    pub(super) shutdown_timeout: String,
    pub(super) pid_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpgrade {
    #[serde(default = "default_ready_timeout")]
    pub(super) ready_timeout: String,
}

impl Default for RawUpgrade {
    fn default() -> Self {
        RawUpgrade { ready_timeout: default_ready_timeout() }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    #[serde(default = "default_socket")]
    pub(super) socket: PathBuf,
    pub(super) listen: Option<String>,
    pub(super) token_file: Option<PathBuf>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin { socket: default_socket(), listen: None, token_file: None }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    #[serde(default = "default_state_dir")]
    pub(super) dir: PathBuf,
    #[serde(default = "default_snapshot_every")]
    pub(super) snapshot_every: String,
}

impl Default for RawState {
    fn default() -> Self {
        RawState { dir: default_state_dir(), snapshot_every: default_snapshot_every() }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEngine {
    #[serde(default = "default_swap_timeout")]
    pub(super) swap_timeout: String,
    #[serde(default = "default_max_resident_retired")]
    pub(super) max_resident_retired: usize,
    #[serde(default = "default_slow_call")]
    pub(super) slow_call: String,
    #[serde(default = "default_max_timers_per_instance")]
    pub(super) max_timers_per_instance: usize,
}

impl Default for RawEngine {
    fn default() -> Self {
        RawEngine {
            swap_timeout: default_swap_timeout(),
            max_resident_retired: default_max_resident_retired(),
            slow_call: default_slow_call(),
            max_timers_per_instance: default_max_timers_per_instance(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModule {
    pub(super) name: String,
    pub(super) path: PathBuf,
    #[serde(default)]
    pub(super) watch: bool,
    pub(super) sha256: Option<String>,
    #[serde(default = "default_max_instances")]
    pub(super) max_instances: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) module: String,
    pub(super) call: Option<String>,
    #[serde(default = "default_instance")]
    pub(super) instance: String,
    pub(super) load_from: Option<PathBuf>,
}

fn default_max_body() -> String {
    "1MiB".into()
}
fn default_body_timeout() -> String {
    "30s".into()
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_instances() -> usize {
    100_000
}
fn default_instance() -> String {
    super::DEFAULT_INSTANCE.into()
}
fn default_shutdown_timeout() -> String {
    "10s".into()
}
fn default_ready_timeout() -> String {
    "30s".into()
}
fn default_socket() -> PathBuf {
    "hotswap.sock".into()
}
fn default_state_dir() -> PathBuf {
    "state".into()
}
fn default_snapshot_every() -> String {
    "30s".into()
}
fn default_swap_timeout() -> String {
    "5s".into()
}
fn default_slow_call() -> String {
    "1s".into()
}
fn default_max_resident_retired() -> usize {
    hotswap::EngineConfig::default().max_resident_retired
}
fn default_max_timers_per_instance() -> usize {
    hotswap::EngineConfig::default().max_timers_per_instance
}
