//! `hotswap.toml`: what the daemon serves. Parsed strictly (unknown keys
//! are errors: a typo must not silently change behaviour), with every
//! relative path resolved against the folder of the config file.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod raw;
use raw::RawConfig;
mod socket;
pub use socket::{SocketEndpoint, SocketInstance};
mod static_dir;
pub use static_dir::StaticDir;

/// A loaded, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    pub listen: SocketAddr,
    pub max_body: usize,
    /// How long a request body may take to arrive, from the end of its header.
    pub body_timeout: Duration,
    /// Open public connections at most (further ones are closed at once).
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
    /// Written with this process's pid (atomically) once it serves.
    pub pid_file: Option<PathBuf>,
    /// How long an upgrade waits for the new process to be ready.
    pub upgrade_timeout: Duration,
    pub admin: Admin,
    pub state_dir: PathBuf,
    pub snapshot_every: Duration,
    pub swap_timeout: Duration,
    pub max_resident_retired: usize,
    /// `engine.max_timers_per_instance`: timers (`ctx.after`) one instance may have pending.
    pub max_timers_per_instance: usize,
    /// A call running longer than this is listed in status and metrics.
    pub slow_call: Duration,
    /// Folders module files may be loaded from.
    pub allowed_dirs: Vec<PathBuf>,
    pub modules: Vec<ModuleConfig>,
    pub routes: Vec<Route>,
    /// `[[socket]]`: WebSocket endpoints on the public port (`config/socket.rs`).
    pub sockets: Vec<SocketEndpoint>,
    /// `[[static]]`: folders served read-only on the public port (`config/static_dir.rs`).
    pub statics: Vec<StaticDir>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// HTTP over this Unix socket, mode 0600.
    pub socket: PathBuf,
    /// Optional TCP admin, with the bearer token read from `token_file`.
    pub tcp: Option<(SocketAddr, PathBuf)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleConfig {
    pub name: String,
    pub path: PathBuf,
    pub watch: bool,
    /// Expected sha256 of the module file, lowercase hex.
    pub sha256: Option<String>,
    /// Instances at most; a call that would start one more is refused.
    pub max_instances: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: hyper::Method,
    pub path: String,
    pub module: String,
    pub action: RouteAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Call `method` on instance `instance` (overridable with `?instance=`).
    Call { method: String, instance: String },
    /// Swap `module` to `lib<name>.so` from this folder, `name` given as `?name=`.
    LoadFrom(PathBuf),
}

/// Why a config file cannot be used.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates `file`.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let error = |reason: String| ConfigError { file: file.to_owned(), reason };
        let text = std::fs::read_to_string(file).map_err(|err| error(format!("cannot read it: {err}")))?;
        Config::parse(file, &text).map_err(error)
    }

    /// Validates the text of a config file that lives at `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Config, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|err| err.to_string().trim_end().to_owned())?;
        let base = file.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let base = std::path::absolute(base).map_err(|err| format!("cannot resolve its folder: {err}"))?;
        let resolve = |path: &Path| base.join(path);

        let listen = parse_addr("server.listen", &raw.server.listen)?;
        let max_body = parse_size("server.max_body", &raw.server.max_body)?;
        let shutdown_timeout = parse_duration("server.shutdown_timeout", &raw.server.shutdown_timeout)?;
        let body_timeout = parse_duration("server.body_timeout", &raw.server.body_timeout)?;
        if body_timeout.is_zero() {
            return Err("server.body_timeout must be longer than 0s".into());
        }
        if raw.server.max_connections == 0 {
            return Err("server.max_connections must be at least 1".into());
        }
        let tcp = match (raw.admin.listen, raw.admin.token_file) {
            (None, None) => None,
            (Some(listen), Some(token)) => Some((parse_addr("admin.listen", &listen)?, resolve(&token))),
            (Some(_), None) => {
                return Err(
                    "admin.listen needs admin.token_file: the TCP admin API requires a bearer token".into()
                );
            }
            (None, Some(_)) => return Err("admin.token_file is set but admin.listen is not".into()),
        };
        let snapshot_every = parse_duration("state.snapshot_every", &raw.state.snapshot_every)?;
        if snapshot_every.is_zero() {
            return Err("state.snapshot_every must be longer than 0s".into());
        }
        let swap_timeout = parse_duration("engine.swap_timeout", &raw.engine.swap_timeout)?;
        let slow_call = parse_duration("engine.slow_call", &raw.engine.slow_call)?;
        let upgrade_timeout = parse_duration("upgrade.ready_timeout", &raw.upgrade.ready_timeout)?;

        let mut names = HashSet::new();
        let mut modules = Vec::new();
        for module in raw.modules {
            check_name("module name", &module.name)?;
            if !names.insert(module.name.clone()) {
                return Err(format!("module '{}' is configured twice", module.name));
            }
            let sha256 = match module.sha256 {
                Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    Some(hex.to_ascii_lowercase())
                }
                Some(other) => {
                    return Err(format!(
                        "module '{}': sha256 must be 64 hex digits, got {other:?}",
                        module.name
                    ));
                }
                None => None,
            };
            if module.max_instances == 0 {
                return Err(format!("module '{}': max_instances must be at least 1", module.name));
            }
            modules.push(ModuleConfig {
                name: module.name,
                path: resolve(&module.path),
                watch: module.watch,
                sha256,
                max_instances: module.max_instances,
            });
        }

        let mut routes = Vec::new();
        for route in raw.routes {
            let where_ = format!("route {} {}", route.method, route.path);
            let method = hyper::Method::from_bytes(route.method.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("{where_}: {:?} is not an HTTP method", route.method))?;
            if !route.path.starts_with('/') {
                return Err(format!("{where_}: the path must start with '/'"));
            }
            if route.path.starts_with("/call/") || route.path == "/healthz" {
                return Err(format!("{where_}: /call/... and /healthz are built in"));
            }
            check_instance_key(route.instance.as_bytes()).map_err(|reason| format!("{where_}: {reason}"))?;
            if !names.contains(&route.module) {
                return Err(format!("{where_}: module '{}' is not configured", route.module));
            }
            let action = match (route.call, route.load_from) {
                (Some(call), None) => RouteAction::Call { method: call, instance: route.instance },
                (None, Some(dir)) => RouteAction::LoadFrom(resolve(&dir)),
                _ => return Err(format!("{where_}: give exactly one of `call` and `load_from`")),
            };
            if routes.iter().any(|r: &Route| r.method == method && r.path == route.path) {
                return Err(format!("{where_}: configured twice"));
            }
            routes.push(Route { method, path: route.path, module: route.module, action });
        }

        let sockets = socket::parse(raw.sockets, &names, |path| routes.iter().any(|r| r.path == path))?;
        let statics = static_dir::parse(raw.statics, resolve)?;

        // Modules load from the folders that hold the configured files, from
        // the `load_from` folders of routes, and from `allowed_dirs`.
        let mut allowed_dirs: Vec<PathBuf> = raw.allowed_dirs.iter().map(|dir| resolve(dir)).collect();
        allowed_dirs.extend(modules.iter().filter_map(|module| module.path.parent().map(Path::to_owned)));
        allowed_dirs.extend(routes.iter().filter_map(|route| match &route.action {
            RouteAction::LoadFrom(dir) => Some(dir.clone()),
            RouteAction::Call { .. } => None,
        }));
        allowed_dirs.sort();
        allowed_dirs.dedup();

        Ok(Config {
            file: std::path::absolute(file).unwrap_or_else(|_| file.to_owned()),
            listen,
            max_body,
            body_timeout,
            max_connections: raw.server.max_connections,
            shutdown_timeout,
            pid_file: raw.server.pid_file.as_deref().map(resolve),
            upgrade_timeout,
            admin: Admin { socket: resolve(&raw.admin.socket), tcp },
            state_dir: resolve(&raw.state.dir),
            snapshot_every,
            swap_timeout,
            max_resident_retired: raw.engine.max_resident_retired,
            max_timers_per_instance: raw.engine.max_timers_per_instance,
            slow_call,
            allowed_dirs,
            modules,
            routes,
            sockets,
            statics,
        })
    }

    pub fn module(&self, name: &str) -> Option<&ModuleConfig> {
        self.modules.iter().find(|module| module.name == name)
    }

    pub fn engine_config(&self) -> hotswap::EngineConfig {
        hotswap::EngineConfig {
            swap_timeout: self.swap_timeout,
            max_resident_retired: self.max_resident_retired,
            max_timers_per_instance: self.max_timers_per_instance,
            ..hotswap::EngineConfig::default()
        }
    }
}

/// Module names become file names (state files) and URL segments.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!("{what} {name:?} must be 1 to 64 of A-Z a-z 0-9 - _ . and not start with '.'"))
    }
}

/// The instance a call without `?instance=` reaches.
pub const DEFAULT_INSTANCE: &str = "default";

/// The longest instance key, in bytes: keys travel in URLs, in state files
/// and in upgrade frames, and each one is an instance a client can create.
pub const MAX_INSTANCE_KEY: usize = 256;

/// Instance keys are 1 to `MAX_INSTANCE_KEY` bytes of UTF-8. Bytes that are
/// not UTF-8 are refused, never replaced: a lossy decoding would merge
/// different keys into one instance.
pub fn check_instance_key(key: &[u8]) -> Result<&str, String> {
    let rule = format!("instance keys are 1 to {MAX_INSTANCE_KEY} bytes of UTF-8");
    if key.is_empty() {
        return Err(format!(
            "the instance key is empty; {rule} (leave out `instance` for the default instance '{DEFAULT_INSTANCE}')"
        ));
    }
    if key.len() > MAX_INSTANCE_KEY {
        return Err(format!("the instance key is {} bytes long; {rule}", key.len()));
    }
    std::str::from_utf8(key).map_err(|err| {
        let at = err.valid_up_to();
        format!(
            "the instance key is not UTF-8 (byte {at} is 0x{:02X}); {rule}, percent-encoded in a URL",
            key[at]
        )
    })
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| format!("{key}: {value:?} is not an address like \"127.0.0.1:8080\""))
}

fn parse_duration(key: &str, value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|err| format!("{key}: {value:?} is not a duration like \"30s\" ({err})"))
}

fn parse_size(key: &str, value: &str) -> Result<usize, String> {
    let size: bytesize::ByteSize =
        value.parse().map_err(|err| format!("{key}: {value:?} is not a size like \"1MiB\" ({err})"))?;
    usize::try_from(size.as_u64()).map_err(|_| format!("{key}: {value:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
allowed_dirs = ["extra"]

[server]
listen = "127.0.0.1:8080"
max_body = "64KiB"

[admin]
socket = "run/hotswap.sock"
listen = "127.0.0.1:9090"
token_file = "admin.token"

[state]
dir = "state"
snapshot_every = "5s"

[[module]]
name = "game"
path = "modules/libgame1.so"
watch = true
sha256 = "ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789"

[[route]]
method = "get"
path = "/hello"
module = "game"
call = "hello"

[[route]]
method = "GET"
path = "/load"
module = "game"
load_from = "modules"
"#;

    #[test]
    fn parses_and_resolves_against_the_config_folder() {
        let config = Config::parse(Path::new("/srv/demo/hotswap.toml"), FULL).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.max_body, 64 * 1024);
        assert_eq!(config.admin.socket, Path::new("/srv/demo/run/hotswap.sock"));
        assert_eq!(
            config.admin.tcp,
            Some(("127.0.0.1:9090".parse().unwrap(), "/srv/demo/admin.token".into()))
        );
        assert_eq!(config.state_dir, Path::new("/srv/demo/state"));
        assert_eq!(config.snapshot_every, Duration::from_secs(5));
        assert_eq!(config.modules[0].path, Path::new("/srv/demo/modules/libgame1.so"));
        assert_eq!(config.modules[0].sha256.as_deref().map(str::len), Some(64));
        assert_eq!(config.routes[0].method, hyper::Method::GET);
        assert_eq!(
            config.routes[0].action,
            RouteAction::Call { method: "hello".into(), instance: "default".into() }
        );
        assert_eq!(config.routes[1].action, RouteAction::LoadFrom("/srv/demo/modules".into()));
        assert_eq!(config.allowed_dirs, [Path::new("/srv/demo/extra"), Path::new("/srv/demo/modules")]);
    }

    #[test]
    fn defaults() {
        let config = Config::parse(Path::new("/x/h.toml"), "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
        assert_eq!(config.max_body, 1024 * 1024);
        assert_eq!(config.admin.socket, Path::new("/x/hotswap.sock"));
        assert_eq!(config.admin.tcp, None);
        assert_eq!(config.snapshot_every, Duration::from_secs(30));
        assert_eq!(config.swap_timeout, Duration::from_secs(5));
        assert_eq!(config.body_timeout, Duration::from_secs(30));
        assert_eq!(config.max_connections, 10_000);
    }

    #[test]
    fn module_limits() {
        let text = "[server]\nlisten = \"127.0.0.1:0\"\n[[module]]\nname = \"a\"\npath = \"a.so\"\n\
                    [[module]]\nname = \"b\"\npath = \"b.so\"\nmax_instances = 3\n";
        let config = Config::parse(Path::new("/x/h.toml"), text).unwrap();
        assert_eq!(config.modules[0].max_instances, 100_000);
        assert_eq!(config.modules[1].max_instances, 3);
    }

    #[test]
    fn instance_keys_are_1_to_256_bytes_of_utf8() {
        assert_eq!(check_instance_key(b"alice"), Ok("alice"));
        assert_eq!(check_instance_key("é".repeat(128).as_bytes()).map(str::len), Ok(256));
        let cases: [(&[u8], &str); 4] = [
            (b"", "the instance key is empty"),
            (&[b'k'; 257], "the instance key is 257 bytes long"),
            (b"\xFF", "not UTF-8 (byte 0 is 0xFF)"),
            (b"ab\xFE", "not UTF-8 (byte 2 is 0xFE)"),
        ];
        for (key, says) in cases {
            let error = check_instance_key(key).unwrap_err();
            assert!(error.contains(says) && error.contains("1 to 256 bytes of UTF-8"), "{key:?}: {error}");
        }
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let cases = [
            ("[server]\nlisten = \"nowhere\"", "server.listen: \"nowhere\" is not an address"),
            (
                "[server]\nlisten = \"127.0.0.1:1\"\nmax_body = \"lots\"",
                "server.max_body: \"lots\" is not a size",
            ),
            ("[server]\nlisten = \"127.0.0.1:1\"\nlisten_twice = 1", "unknown field `listen_twice`"),
            (
                "[server]\nlisten = \"127.0.0.1:1\"\n[admin]\nlisten = \"127.0.0.1:2\"",
                "needs admin.token_file",
            ),
            (
                "[server]\nlisten = \"127.0.0.1:1\"\n[[module]]\nname = \"a/b\"\npath = \"x.so\"",
                "module name \"a/b\" must be",
            ),
            (
                "[server]\nlisten = \"127.0.0.1:1\"\n[[module]]\nname = \"a\"\npath = \"x.so\"\nsha256 = \"12\"",
                "sha256 must be 64 hex digits",
            ),
            (
                "[server]\nlisten = \"127.0.0.1:1\"\n[[route]]\nmethod = \"GET\"\npath = \"/x\"\nmodule = \"nope\"\ncall = \"x\"",
                "module 'nope' is not configured",
            ),
            (
                "[server]\nlisten = \"127.0.0.1:1\"\nbody_timeout = \"0s\"",
                "server.body_timeout must be longer than 0s",
            ),
            (
                "[server]\nlisten = \"127.0.0.1:1\"\nmax_connections = 0",
                "server.max_connections must be at least 1",
            ),
            (
                "[server]\nlisten = \"127.0.0.1:1\"\n[[module]]\nname = \"a\"\npath = \"x.so\"\nmax_instances = 0",
                "module 'a': max_instances must be at least 1",
            ),
            (
                "[server]\nlisten = \"127.0.0.1:1\"\n[[module]]\nname = \"a\"\npath = \"x.so\"\n\
                 [[route]]\nmethod = \"GET\"\npath = \"/x\"\nmodule = \"a\"\ncall = \"x\"\ninstance = \"\"",
                "route GET /x: the instance key is empty",
            ),
        ];
        for (text, expected) in cases {
            let error = Config::parse(Path::new("/x/h.toml"), text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
