//! `[[socket]]`: WebSocket endpoints on the public port (issue 9).
//!
//! ```toml
//! [[socket]]
//! path = "/ws/chat"        # where clients connect (GET with Upgrade: websocket)
//! module = "chat"          # a configured module
//! instance = "lobby"       # optional: every session joins this instance;
//!                          # without it, `?instance=K` picks it (default `default`)
//! max_sessions = 10000     # open sessions on this endpoint at most; more get 503
//! queue = 256              # outgoing messages waiting per session; past it the session is closed
//! tick = "50ms"            # optional: each instance with a session gets `on_tick` this often
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::{check_instance_key, parse_duration};

/// One `[[socket]]` endpoint, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEndpoint {
    pub path: String,
    pub module: String,
    pub instance: SocketInstance,
    /// Open sessions at most on this endpoint; one more is answered 503.
    pub max_sessions: usize,
    /// Outgoing messages waiting per session at most; one more closes it.
    pub queue: usize,
    /// How often each instance with a session gets `on_tick`; `None`: never.
    pub tick: Option<Duration>,
}

/// Which instance a session joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketInstance {
    /// Always this one (`instance = "lobby"`); a `?instance=` is ignored.
    Fixed(String),
    /// The `?instance=` query parameter, or `default` without one.
    FromQuery,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSocket {
    path: String,
    module: String,
    instance: Option<String>,
    #[serde(default = "default_max_sessions")]
    max_sessions: usize,
    #[serde(default = "default_queue")]
    queue: usize,
    tick: Option<String>,
}

/// `max_sessions` without a setting.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// `queue` without a setting.
pub const DEFAULT_QUEUE: usize = 256;
/// The shortest `tick`: a shorter period would keep a call thread busy with
/// ticks alone.
pub const MIN_TICK: Duration = Duration::from_millis(1);

fn default_max_sessions() -> usize {
    DEFAULT_MAX_SESSIONS
}
fn default_queue() -> usize {
    DEFAULT_QUEUE
}

/// Validates the `[[socket]]` tables. `modules` are the configured module
/// names; `taken` says whether a path is already a route (or built in).
pub(super) fn parse(
    raw: Vec<RawSocket>,
    modules: &std::collections::HashSet<String>,
    taken: impl Fn(&str) -> bool,
) -> Result<Vec<SocketEndpoint>, String> {
    let mut sockets: Vec<SocketEndpoint> = Vec::new();
    for socket in raw {
        let where_ = format!("socket {}", socket.path);
        if !socket.path.starts_with('/') {
            return Err(format!("{where_}: the path must start with '/'"));
        }
        if socket.path.starts_with("/call/") || socket.path == "/healthz" {
            return Err(format!("{where_}: /call/... and /healthz are built in"));
        }
        if taken(&socket.path) {
            return Err(format!("{where_}: a [[route]] has the same path; give the socket another one"));
        }
        if sockets.iter().any(|other| other.path == socket.path) {
            return Err(format!("{where_}: configured twice"));
        }
        if !modules.contains(&socket.module) {
            return Err(format!("{where_}: module '{}' is not configured", socket.module));
        }
        let instance = match socket.instance {
            Some(key) => {
                check_instance_key(key.as_bytes()).map_err(|reason| format!("{where_}: {reason}"))?;
                SocketInstance::Fixed(key)
            }
            None => SocketInstance::FromQuery,
        };
        if socket.max_sessions == 0 {
            return Err(format!("{where_}: max_sessions must be at least 1"));
        }
        if socket.queue == 0 {
            return Err(format!(
                "{where_}: queue must be at least 1 (outgoing messages that may wait per session)"
            ));
        }
        let tick = match socket.tick {
            None => None,
            Some(text) => {
                let tick = parse_duration(&format!("{where_}: tick"), &text)?;
                if tick < MIN_TICK {
                    return Err(format!("{where_}: tick is {tick:?}; it must be at least {MIN_TICK:?}"));
                }
                Some(tick)
            }
        };
        sockets.push(SocketEndpoint {
            path: socket.path,
            module: socket.module,
            instance,
            max_sessions: socket.max_sessions,
            queue: socket.queue,
            tick,
        });
    }
    // One module's ticks come from one period: two endpoints of one module
    // with different periods would tick its instances at both.
    for (at, socket) in sockets.iter().enumerate() {
        if let Some(other) = sockets[..at].iter().find(|other| other.module == socket.module)
            && other.tick != socket.tick
        {
            return Err(format!(
                "socket {}: module '{}' ticks every {:?} at socket {}, here every {:?}; give both the same tick",
                socket.path, socket.module, other.tick, other.path, socket.tick
            ));
        }
    }
    Ok(sockets)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const BASE: &str = "[server]\nlisten = \"127.0.0.1:0\"\n[[module]]\nname = \"chat\"\npath = \"c.so\"\n";

    #[test]
    fn sockets_parse_with_defaults() {
        let text = format!(
            "{BASE}[[socket]]\npath = \"/ws\"\nmodule = \"chat\"\n\
             [[socket]]\npath = \"/lobby\"\nmodule = \"chat\"\ninstance = \"lobby\"\nmax_sessions = 5\nqueue = 3\n"
        );
        let config = Config::parse(Path::new("/x/h.toml"), &text).unwrap();
        assert_eq!(
            config.sockets,
            [
                SocketEndpoint {
                    path: "/ws".into(),
                    module: "chat".into(),
                    instance: SocketInstance::FromQuery,
                    max_sessions: DEFAULT_MAX_SESSIONS,
                    queue: DEFAULT_QUEUE,
                    tick: None,
                },
                SocketEndpoint {
                    path: "/lobby".into(),
                    module: "chat".into(),
                    instance: SocketInstance::Fixed("lobby".into()),
                    max_sessions: 5,
                    queue: 3,
                    tick: None,
                },
            ]
        );
    }

    #[test]
    fn socket_refusals_say_what_is_wrong() {
        let cases = [
            ("path = \"ws\"\nmodule = \"chat\"", "socket ws: the path must start with '/'"),
            ("path = \"/ws\"\nmodule = \"nope\"", "socket /ws: module 'nope' is not configured"),
            ("path = \"/healthz\"\nmodule = \"chat\"", "built in"),
            ("path = \"/ws\"\nmodule = \"chat\"\nmax_sessions = 0", "max_sessions must be at least 1"),
            ("path = \"/ws\"\nmodule = \"chat\"\nqueue = 0", "queue must be at least 1"),
            ("path = \"/ws\"\nmodule = \"chat\"\ninstance = \"\"", "the instance key is empty"),
            ("path = \"/ws\"\nmodule = \"chat\"\ntick = \"soon\"", "tick: \"soon\" is not a duration"),
            ("path = \"/ws\"\nmodule = \"chat\"\ntick = \"0s\"", "tick is 0ns; it must be at least 1ms"),
            ("path = \"/ws\"\nmodule = \"chat\"\nsize = 1", "unknown field `size`"),
            (
                "path = \"/ws\"\nmodule = \"chat\"\n[[socket]]\npath = \"/ws\"\nmodule = \"chat\"",
                "socket /ws: configured twice",
            ),
            (
                "path = \"/a\"\nmodule = \"chat\"\ntick = \"1s\"\n[[socket]]\npath = \"/b\"\nmodule = \"chat\"",
                "module 'chat' ticks every Some(1s) at socket /a, here every None",
            ),
            (
                "path = \"/hello\"\nmodule = \"chat\"\n[[route]]\nmethod = \"GET\"\npath = \"/hello\"\n\
                 module = \"chat\"\ncall = \"hello\"",
                "a [[route]] has the same path",
            ),
        ];
        for (socket, expected) in cases {
            let text = format!("{BASE}[[socket]]\n{socket}\n");
            let error = Config::parse(Path::new("/x/h.toml"), &text).unwrap_err();
            assert!(error.contains(expected), "{socket:?}: {error}");
        }
    }
}
