//! The admin API: HTTP over the admin Unix socket (mode 0600, so only the
//! daemon's user can reach it), and optionally over TCP with a bearer token.
//!
//! | request | what it does |
//! |---|---|
//! | `GET /v1/status` | modules, versions, counters, last swap, uptime, pid (JSON) |
//! | `POST /v1/modules/{name}/load` | swap to `{"path": ...}` or the configured file; answers when done |
//! | `POST /v1/modules/{name}/load` with `"dry_run": true` | try that swap on copies of the live state; change nothing |
//! | `POST /v1/modules/{name}/rollback` | swap back to the version before |
//! | `POST /v1/modules/{name}/call/{method}?instance=K` | one call, as on the public port |
//! | `GET /v1/modules/{name}/instances` | the module's instances: key, version, calls (a JSON list) |
//! | `DELETE /v1/modules/{name}/instances/{key}` | end one instance, dropping its state (after its call in flight) |
//! | `POST /v1/snapshot` | write every module's state file now |
//! | `POST /v1/upgrade` | replace this process with `{"binary": ...}` (default: the binary it was started from); answers once the new process serves, or why not |
//! | `GET /metrics` | Prometheus text format |

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api;
use crate::daemon::{Daemon, Trigger};
use crate::http::{self, Response};

/// Largest JSON body the admin API reads (a load request is a path).
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// The SHA-256 of the admin token. Comparing digests in constant time
/// reveals neither the token's bytes nor its length through timing.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    pub fn new(secret: &str) -> Token {
        Token(Sha256::digest(secret.as_bytes()).into())
    }

    fn accepts(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.0).into()
    }
}

pub async fn handle(daemon: Arc<Daemon>, token: Option<Token>, request: Request<Incoming>) -> Response {
    if let Some(token) = &token {
        let presented = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if !token.accepts(presented) {
            let mut response =
                http::error(401, "this admin API needs the header `Authorization: Bearer <token>`");
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    // A segment that is not UTF-8 is refused, not dropped (which would
    // shift the others into another endpoint).
    let Some(segments) =
        path.trim_start_matches('/').split('/').map(http::segment).collect::<Option<Vec<String>>>()
    else {
        return http::error(400, format!("{path} is not UTF-8 once percent-decoded"));
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (&parts.method, segments.as_slice()) {
        // Both read the engine's locks and /proc/self/maps: not on an async worker.
        (&Method::GET, ["v1", "status"]) => {
            match tokio::task::spawn_blocking(move || daemon.status()).await {
                Ok(status) => http::json(200, &status),
                Err(err) => http::error(500, format!("reading the status failed: {err}")),
            }
        }
        (&Method::GET, ["metrics"]) => {
            let text = match tokio::task::spawn_blocking(move || daemon.metrics_text()).await {
                Ok(text) => text,
                Err(err) => return http::error(500, format!("reading the metrics failed: {err}")),
            };
            let mut response = http::bytes(200, text);
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            response
        }
        (&Method::POST, ["v1", "modules", name, "load"]) => {
            let request: api::LoadRequest =
                match json_body(body, &parts.headers, "{\"path\": \"...\"}", daemon.config().body_timeout)
                    .await
                {
                    Ok(request) => request,
                    Err(response) => return response,
                };
            let name = name.to_string();
            if request.dry_run {
                return blocking(move || {
                    daemon.dry_run(&name, request.path.as_deref().map(std::path::Path::new))
                })
                .await;
            }
            blocking(move || {
                daemon.swap(&name, request.path.as_deref().map(std::path::Path::new), Trigger::Admin)
            })
            .await
        }
        (&Method::POST, ["v1", "modules", name, "rollback"]) => {
            // Named as `load` names it (the engine would say "not loaded").
            if let Some(refusal) = not_configured(&daemon, name) {
                return refusal;
            }
            let name = name.to_string();
            blocking(move || daemon.rollback(&name)).await
        }
        (&Method::GET, ["v1", "modules", name, "instances"]) => {
            if let Some(refusal) = not_configured(&daemon, name) {
                return refusal;
            }
            match daemon.engine.instances(name) {
                Ok(list) => http::json(200, &list.into_iter().map(api::Instance::from).collect::<Vec<_>>()),
                Err(error) => http::error(404, error.to_string()),
            }
        }
        (&Method::DELETE, ["v1", "modules", name, "instances", key]) => {
            if let Some(refusal) = not_configured(&daemon, name) {
                return refusal;
            }
            let (name, key) = (name.to_string(), key.to_string());
            // It waits for the instance's call in flight: not on an async worker.
            let removing = daemon.clone();
            let (module, instance) = (name.clone(), key.clone());
            let removed = tokio::task::spawn_blocking(move || {
                // Not while an upgrade moves the state, nor after it left.
                let _serving =
                    removing.lifecycle.hold(&format!("remove instance '{instance}' of {module}"))?;
                Ok(removing.engine.remove_instance(&module, &instance))
            });
            match removed.await {
                Ok(Ok(Ok(true))) => http::json(200, &api::RemovedInstance { module: name, key }),
                Ok(Ok(Ok(false))) => http::error(404, format!("module '{name}' has no instance '{key}'")),
                Ok(Ok(Err(error))) => http::error(404, error.to_string()),
                Ok(Err(not_now)) => http::error(409, crate::lifecycle::NotNow::to_string(&not_now)),
                Err(err) => http::error(500, format!("removing the instance failed: {err}")),
            }
        }
        (&Method::POST, ["v1", "modules", name, "call", method]) => {
            let instance = crate::public::instance_key(parts.uri.query(), crate::config::DEFAULT_INSTANCE);
            let config = daemon.config();
            // Read before a refusal, as on the public port.
            let payload =
                match http::read_body(body, &parts.headers, config.max_body, config.body_timeout).await {
                    Ok(payload) => payload,
                    Err(response) => return response,
                };
            let instance = match instance {
                Ok(instance) => instance,
                Err(reason) => return http::error(400, reason),
            };
            // The same call as on the public port, through the upgrade gate.
            let uri = format!("/call/{}/{}?instance={}", encode(name), encode(method), encode(&instance));
            let (call_parts, ()) = hyper::Request::post(uri).body(()).expect("a valid request").into_parts();
            crate::public::gated_call(&daemon, &call_parts, payload, name, &instance, method).await
        }
        (&Method::POST, ["v1", "upgrade"]) => {
            let request: api::UpgradeRequest =
                match json_body(body, &parts.headers, "{\"binary\": \"...\"}", daemon.config().body_timeout)
                    .await
                {
                    Ok(request) => request,
                    Err(response) => return response,
                };
            upgrade(daemon, request.binary.map(Into::into)).await
        }
        (&Method::POST, ["v1", "snapshot"]) => {
            match tokio::task::spawn_blocking(move || daemon.snapshot_all()).await {
                Ok(Ok(run)) if run.failed.is_empty() => http::json(200, &run),
                Ok(Ok(run)) => http::json(500, &run),
                Ok(Err(not_now)) => http::error(409, not_now.to_string()),
                Err(err) => http::error(500, format!("the snapshot task failed: {err}")),
            }
        }
        (_, ["v1", "status"] | ["metrics"] | ["v1", "modules", _, "instances"]) => {
            http::error(405, format!("use GET {path}"))
        }
        (_, ["v1", "modules", _, "instances", _]) => http::error(405, format!("use DELETE {path}")),
        (
            _,
            ["v1", "snapshot" | "upgrade"]
            | ["v1", "modules", _, "load" | "rollback"]
            | ["v1", "modules", _, "call", _],
        ) => http::error(405, format!("use POST {path}")),
        _ => http::error(404, format!("no admin endpoint {} {path}", parts.method)),
    }
}

/// Reads an optional JSON body: empty means `T::default()`; anything else
/// must parse as `T` (`shape` says what one looks like, for the error).
async fn json_body<T: serde::de::DeserializeOwned + Default>(
    body: Incoming,
    headers: &hyper::HeaderMap,
    shape: &str,
    timeout: std::time::Duration,
) -> Result<T, Response> {
    let bytes = http::read_body(body, headers, ADMIN_BODY_LIMIT, timeout).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|err| http::error(400, format!("the body must be {shape} or empty: {err}")))
}

/// Replaces this process (see `upgrade.rs`) and answers with the new pid or why not.
pub async fn upgrade(daemon: Arc<Daemon>, binary: Option<std::path::PathBuf>) -> Response {
    let binary = binary.unwrap_or_else(|| daemon.binary.clone());
    let runtime = tokio::runtime::Handle::current();
    match tokio::task::spawn_blocking(move || crate::upgrade::run(&daemon, &runtime, &binary)).await {
        Ok(Ok(done)) => http::json(200, &done),
        Ok(Err(refused)) => http::error(refused.http_status(), refused.to_string()),
        Err(err) => http::error(500, format!("the upgrade task failed: {err}")),
    }
}

/// 404 naming the module the way a refused load does, if it has no `[[module]]` entry.
fn not_configured(daemon: &Daemon, module: &str) -> Option<Response> {
    if daemon.config().module(module).is_some() {
        return None;
    }
    let failure = crate::daemon::SwapFailure::NotConfigured(module.to_owned());
    Some(http::error(http::swap_failure_status(&failure), failure.to_string()))
}

fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Runs a swap (or a dry run) off the async threads and answers with its
/// report or why it failed.
async fn blocking<R: serde::Serialize + Send + 'static>(
    swap: impl FnOnce() -> Result<R, crate::daemon::SwapFailure> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(swap).await {
        Ok(Ok(report)) => http::json(200, &report),
        Ok(Err(failure)) => http::error(http::swap_failure_status(&failure), failure.to_string()),
        Err(err) => http::error(500, format!("the swap task failed: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_digest() {
        let token = Token::new("s3cret");
        assert!(token.accepts(b"s3cret"));
        assert!(!token.accepts(b"s3cre"));
        assert!(!token.accepts(b"s3cret "));
        assert!(!token.accepts(b""));
    }
}
