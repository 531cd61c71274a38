//! The public HTTP port: module calls, configured routes, health.
//!
//! | request | answer |
//! |---|---|
//! | `POST /call/{module}/{method}?instance=K` | 200 with the reply bytes; no `instance`: the one named `default` |
//! | a `[[route]]` with `call` | the same, for a fixed module, method and instance |
//! | a `[[route]]` with `load_from` | swaps the module to `lib{name}.so` from that folder |
//! | `GET /healthz` | 200 while serving, 503 once draining |
//! | a `[[socket]]` path | a WebSocket session (`sockets.rs`) |
//! | a path under a `[[static]]` prefix, no route | the folder's file (`static_files.rs`) |
//!
//! A module's error is 422 `{"error": ...}`, a panic 500, an unknown module
//! or route 404, a body over `server.max_body` 413, one slower than
//! `server.body_timeout` 408, a key that is not 1 to 256 bytes of UTF-8
//! 400, a new instance past the module's `max_instances` 429. Every response names
//! the process that served it in a `hotswap-pid` header.
//!
//! During a process upgrade calls wait while the state moves; once it moved,
//! this process forwards what still arrives on its open connections to the
//! new process and closes each connection after answering.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use hotswap::CallError;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, HeaderValue};
use hyper::{Method, Request};

use crate::config::{DEFAULT_INSTANCE, RouteAction, check_instance_key};
use crate::daemon::{Daemon, Trigger};
use crate::http::{self, Response};

pub async fn handle(daemon: Arc<Daemon>, request: Request<Incoming>) -> Response {
    let config = daemon.config();
    let mut response = match config.sockets.iter().find(|socket| socket.path == request.uri().path()) {
        Some(socket) => crate::sockets::accept(&daemon, socket, request),
        None => route(&daemon, request).await,
    };
    daemon.metrics.response(response.status().as_u16());
    let headers = response.headers_mut();
    if !headers.contains_key(PID_HEADER) {
        headers.insert(PID_HEADER, HeaderValue::from(std::process::id()));
    }
    if daemon.handed_over.get().is_some() && !daemon.outgoing.moving() {
        // The client's next request belongs to the new process, and its
        // connection does not move there.
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Names the process that answered (a forwarded answer keeps the new process's).
pub const PID_HEADER: &str = "hotswap-pid";

async fn route(daemon: &Arc<Daemon>, request: Request<Incoming>) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let query = parts.uri.query();
    if path == "/healthz" {
        return match daemon.draining.load(Relaxed) {
            false => http::bytes(200, "ok\n"),
            true => http::bytes(503, "draining\n"),
        };
    }
    let config = daemon.config();
    if let Some(rest) = path.strip_prefix("/call/") {
        if parts.method != Method::POST {
            return http::error(405, format!("use POST {path}"));
        }
        let Some((module, method)) =
            rest.split_once('/').and_then(|(m, f)| Some((http::segment(m)?, http::segment(f)?)))
        else {
            return http::error(404, "call a module with POST /call/{module}/{method}?instance={key}");
        };
        // The body is read even for a bad key: answering before it would
        // close the connection under a client still sending, which may lose
        // the answer to a reset.
        let instance = instance_key(query, DEFAULT_INSTANCE);
        return match http::read_body(body, &parts.headers, config.max_body, config.body_timeout).await {
            Ok(payload) => match instance {
                Ok(instance) => gated_call(daemon, &parts, payload, &module, &instance, &method).await,
                Err(reason) => http::error(400, reason),
            },
            Err(response) => response,
        };
    }
    let same_path: Vec<_> = config.routes.iter().filter(|route| route.path == path).collect();
    let Some(route) = same_path.iter().find(|route| route.method == parts.method) else {
        // A `[[static]]` folder serves what no route has.
        if let (None, Some((dir, rest))) =
            (same_path.first(), crate::static_files::find(&config.statics, path))
        {
            return crate::static_files::serve(dir, &parts.method, rest).await;
        }
        if let Some(other) = same_path.first() {
            return http::error(405, format!("{path} takes {}", other.method));
        }
        return http::error(
            404,
            format!(
                "no route for {} {path}; modules are called with POST /call/{{module}}/{{method}}",
                parts.method
            ),
        );
    };
    match &route.action {
        RouteAction::Call { method, instance } => {
            let instance = instance_key(query, instance);
            match http::read_body(body, &parts.headers, config.max_body, config.body_timeout).await {
                Ok(payload) => match instance {
                    Ok(instance) => {
                        gated_call(daemon, &parts, payload, &route.module, &instance, method).await
                    }
                    Err(reason) => http::error(400, reason),
                },
                Err(response) => response,
            }
        }
        RouteAction::LoadFrom(_) if daemon.handed_over.get().is_some() => {
            let payload = http::read_body(body, &parts.headers, config.max_body, config.body_timeout)
                .await
                .unwrap_or_default();
            let (to, _) = daemon.handed_over.get().expect("checked above");
            http::forward(*to, &parts, payload).await
        }
        RouteAction::LoadFrom(dir) => {
            let Some(name) = http::query_param(query, "name") else {
                return http::error(400, format!("say which module file to load: {path}?name=NAME"));
            };
            let file = match Daemon::route_file(dir, &name) {
                Ok(file) => file,
                Err(reason) => return http::error(404, reason),
            };
            let (daemon, module) = (daemon.clone(), route.module.clone());
            let swapped =
                tokio::task::spawn_blocking(move || daemon.swap(&module, Some(&file), Trigger::Route)).await;
            match swapped {
                Ok(Ok(report)) => http::bytes(200, format!("{}\n", report.summary())),
                Ok(Err(failure)) => http::error(http::swap_failure_status(&failure), failure.to_string()),
                Err(panicked) => http::error(500, format!("the swap task failed: {panicked}")),
            }
        }
    }
}

/// The instance a request addresses: `?instance=`, percent-decoded and
/// checked (1 to 256 bytes of UTF-8), or `default`; `Err` says why not,
/// for a 400.
pub fn instance_key(query: Option<&str>, default: &str) -> Result<String, String> {
    match http::query_bytes(query, "instance") {
        None => Ok(default.to_owned()),
        Some(key) => check_instance_key(&key).map(str::to_owned),
    }
}

/// Refusals for `max_instances` are logged at most this often (a client
/// that keeps trying must not flood the log).
static INSTANCE_LIMIT_LOG: http::Throttle = http::Throttle::new(std::time::Duration::from_secs(10));

/// A call through the upgrade gate: it waits while an upgrade moves the
/// state, and goes to the new process once the state moved. The body was
/// read before, so a slow client never holds up an upgrade.
pub async fn gated_call(
    daemon: &Arc<Daemon>,
    parts: &hyper::http::request::Parts,
    payload: Bytes,
    module: &str,
    instance: &str,
    method: &str,
) -> Response {
    let open = daemon.gate.read().await;
    if let Some((to, _)) = daemon.handed_over.get() {
        drop(open);
        return http::forward(*to, parts, payload).await;
    }
    call(daemon, module, instance, method, payload).await
}

/// One module call, answered with the reply or a status that says what went wrong.
///
/// The module's code runs on a call thread, never on an async worker,
/// after the call's turn on its instance came (see `calls.rs`): a slow or
/// stuck call holds only its own instance.
pub async fn call(
    daemon: &Arc<Daemon>,
    module: &str,
    instance: &str,
    method: &str,
    payload: Bytes,
) -> Response {
    let in_flight = InFlight::new(daemon.clone());
    let turn = daemon.calls.turn(module, instance).await;
    let method = method.to_owned();
    // Everything the call needs moves to its thread: if the client leaves,
    // the call still ends there and only then releases the instance.
    let pool = daemon.calls.pool.clone();
    let ran = pool
        .run_and_wait(move || {
            let daemon = &in_flight.0;
            let (result, took) =
                turn.run(&method, || daemon.engine.call(turn.module(), turn.instance(), &method, &payload));
            if took >= daemon.calls.slow_call() {
                daemon.metrics.slow_call_ended(turn.module());
                tracing::warn!(
                    module = turn.module(),
                    instance = turn.instance(),
                    method,
                    "a call took {:.2} s (engine.slow_call is {:?})",
                    took.as_secs_f64(),
                    daemon.calls.slow_call()
                );
            }
            result
        })
        .await;
    let Some(result) = ran else {
        return http::error(500, format!("the thread of the call to {module} failed; see the log"));
    };
    match result {
        Ok(reply) => http::bytes(200, reply),
        Err(error) => {
            let status = match &error {
                CallError::UnknownModule { .. } => 404,
                CallError::Refused { .. } => 422,
                CallError::TooManyInstances { .. } => {
                    if let Some(refused) = INSTANCE_LIMIT_LOG.admit() {
                        tracing::warn!("{error} ({refused} call(s) refused for it since the last report)");
                    }
                    429
                }
                _ => 500,
            };
            http::error(status, error.to_string())
        }
    }
}

/// Counts a call in `hotswap_inflight_calls` from its arrival until its
/// module code returned (or it gave up before its turn came).
struct InFlight(Arc<Daemon>);

impl InFlight {
    fn new(daemon: Arc<Daemon>) -> InFlight {
        daemon.metrics.inflight_calls.fetch_add(1, Relaxed);
        InFlight(daemon)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.inflight_calls.fetch_sub(1, Relaxed);
    }
}
