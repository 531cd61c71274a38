//! What the public port and the admin API share: responses, request bodies
//! with a size limit, and an accept loop that drains its connections
//! gracefully when told to stop. Each connection is served by
//! `parked::serve_connection`, which can also stop one at a request
//! boundary and give its socket back.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};

use crate::api;
use crate::daemon::SwapFailure;
use hotswap::SwapError;
use parked::{Ending, Parked};

pub mod parked;

pub type Response = hyper::Response<Full<Bytes>>;

/// A connection that has sent no complete request header for this long is
/// closed (an idle keep-alive connection, or a client that stalls).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

pub fn bytes(status: u16, body: impl Into<Bytes>) -> Response {
    let body = body.into();
    let content_type = if std::str::from_utf8(&body).is_ok() {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    with_type(status, content_type, body)
}

pub fn json<T: Serialize>(status: u16, value: &T) -> Response {
    let mut body = serde_json::to_vec_pretty(value).expect("API documents always serialize");
    body.push(b'\n');
    with_type(status, "application/json", body.into())
}

pub fn error(status: u16, message: impl Into<String>) -> Response {
    json(status, &api::Error { error: message.into() })
}

fn with_type(status: u16, content_type: &'static str, body: Bytes) -> Response {
    let mut response = hyper::Response::new(Full::new(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The status code a refused swap answers with, on the admin API and a
/// `load_from` route.
pub fn swap_failure_status(failure: &SwapFailure) -> u16 {
    match failure {
        SwapFailure::NotConfigured(_) => 404,
        SwapFailure::Refused(_) => 403,
        SwapFailure::Engine(SwapError::SwapInProgress { .. }) | SwapFailure::NotNow(_) => 409,
        SwapFailure::SaveFailed(_) => 503,
        SwapFailure::Engine(SwapError::UnknownModule { .. }) => 404,
        SwapFailure::Engine(_) => 422,
        SwapFailure::Unchanged => 200,
    }
}

/// Reads a request body of at most `limit` bytes (a larger one gets 413)
/// that arrives within `timeout` (a slower one gets 408 and the connection
/// is closed).
pub async fn read_body(
    body: Incoming,
    headers: &HeaderMap,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Response> {
    let too_large = || error(413, format!("the request body is larger than the limit of {limit} bytes"));
    let declared =
        headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|declared| declared > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(timeout, collect_body(body, limit)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(BodyError::TooLarge)) => Err(too_large()),
        Ok(Err(BodyError::Read(err))) => Err(error(400, format!("could not read the request body: {err}"))),
        Err(_elapsed) => {
            let took = humantime::format_duration(timeout);
            let mut response = error(
                408,
                format!(
                    "the request body did not arrive within {took} (server.body_timeout); send it faster"
                ),
            );
            // The rest of the body may still come: the connection cannot
            // carry another request.
            response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            Err(response)
        }
    }
}

enum BodyError {
    TooLarge,
    Read(hyper::Error),
}

/// Collects a body into one buffer. Each piece is copied out as it comes:
/// a piece is a view into the connection's read buffer (kilobytes), so
/// keeping the pieces of a body sent a byte at a time would hold kilobytes
/// per byte. Memory stays within twice the bytes received, and `limit`.
async fn collect_body(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    // Most bodies arrive in one piece: that one is kept as it is, uncopied.
    let mut first: Option<Bytes> = None;
    let mut copied: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        if first.is_none() && copied.is_empty() {
            if data.len() > limit {
                return Err(BodyError::TooLarge);
            }
            first = Some(data);
            continue;
        }
        if let Some(held) = first.take() {
            append_within(&mut copied, &held, limit)?;
        }
        append_within(&mut copied, &data, limit)?;
    }
    Ok(first.unwrap_or_else(|| copied.into()))
}

/// Appends `data` to `buffer`, growing it at most to `limit` bytes.
fn append_within(buffer: &mut Vec<u8>, data: &[u8], limit: usize) -> Result<(), BodyError> {
    let needed = buffer.len() + data.len();
    if needed > limit {
        return Err(BodyError::TooLarge);
    }
    if needed > buffer.capacity() {
        let grown = needed.max(buffer.capacity() * 2).min(limit);
        buffer.reserve_exact(grown - buffer.len());
    }
    buffer.extend_from_slice(data);
    Ok(())
}

/// The value of query parameter `name`, percent-decoded.
pub fn query_param(request_query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(request_query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The value of query parameter `name`, percent-decoded (`+` is a space) to
/// its bytes exactly: nothing is replaced, so bytes that are not UTF-8 can
/// be refused rather than merged into U+FFFD.
pub fn query_bytes(request_query: Option<&str>, name: &str) -> Option<Vec<u8>> {
    request_query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        percent_encoding::percent_decode_str(&spaced(key))
            .eq(name.bytes())
            .then(|| percent_encoding::percent_decode_str(&spaced(value)).collect())
    })
}

/// `+` becomes a space before percent-decoding, so `%2B` stays a `+`.
fn spaced(raw: &str) -> std::borrow::Cow<'_, str> {
    match raw.contains('+') {
        true => std::borrow::Cow::Owned(raw.replace('+', " ")),
        false => std::borrow::Cow::Borrowed(raw),
    }
}

/// A percent-decoded path segment.
pub fn segment(raw: &str) -> Option<String> {
    percent_encoding::percent_decode_str(raw).decode_utf8().ok().map(|s| s.into_owned())
}

/// Lets a repeated warning through at most once per period, counting the
/// occurrences in between, so an attacker cannot flood the log.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    /// When it last let one through, and the occurrences since.
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttle {
    pub const fn new(every: Duration) -> Throttle {
        Throttle { every, state: std::sync::Mutex::new((None, 0)) }
    }

    /// Counts one occurrence; returns how many to report (this one
    /// included) when it is time to log, else `None`.
    pub fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.1 += 1;
        if state.0.is_some_and(|at| at.elapsed() < self.every) {
            return None;
        }
        let count = state.1;
        *state = (Some(std::time::Instant::now()), 0);
        Some(count)
    }
}

/// A listening socket the accept loop can take connections from.
pub trait Listener: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_one(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_one(&self) -> std::io::Result<Self::Stream> {
        let (stream, _) = self.accept().await?;
        // Small request/response exchanges: do not wait to coalesce packets.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_one(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// What an accept loop does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listening {
    Accept,
    /// Stop calling accept but keep the socket (an upgrade in progress;
    /// connections wait in the kernel's queue for whichever process accepts).
    Pause,
    /// Shut down: close the socket, let requests in flight finish, close.
    Stop,
    /// Another process took over: close our copy of the socket. Open
    /// connections move to it if it takes them ([`Moves::out`]): each parks
    /// at its next request boundary. Otherwise they are served on (each
    /// closes after its next request) until they are gone or the drain
    /// deadline passes.
    HandOver,
}

/// Where a parked connection goes at a hand-over.
pub type ParkSink<S> = Arc<dyn Fn(Parked<S>) + Send + Sync>;

/// How an accept loop's connections move between processes in an upgrade.
pub struct Moves<S> {
    /// Asked at [`Listening::HandOver`]: where connections go if the new
    /// process takes them (`None`: they close as the drain says).
    pub out: Option<Box<dyn FnOnce() -> Option<ParkSink<S>> + Send>>,
    /// Connections the previous process moved here, served like accepted ones.
    pub incoming: Option<mpsc::UnboundedReceiver<Parked<S>>>,
}

impl<S> Moves<S> {
    /// Nothing moves: the admin sockets.
    pub fn none() -> Moves<S> {
        Moves { out: None, incoming: None }
    }
}

/// Accepts connections from `accept` (and takes the ones `moves` brings)
/// and serves each with `handler`, as `mode` says; returns when it says
/// `Stop` or `HandOver` and the open connections are done (closed, or
/// parked and given to `moves.out`), or after `drain`.
pub async fn serve<S, A, AF, H, HF>(
    what: &str,
    mut accept: A,
    mut mode: watch::Receiver<Listening>,
    drain: Duration,
    handler: H,
    moves: Moves<S>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: FnMut() -> AF,
    AF: Future<Output = std::io::Result<S>>,
    H: Fn(Request<Incoming>) -> HF + Clone + Send + Sync + 'static,
    HF: Future<Output = Response> + Send + 'static,
{
    // hyper-util's GracefulShutdown cannot watch a connection that allows
    // upgrades (a `[[socket]]` takes it over) without its HTTP/2 build, so
    // the open connections are counted here and told to finish by `stop`.
    let open = Arc::new(());
    let (stop, _) = watch::channel(Ending::Serve);
    let still_open = |open: &Arc<()>| Arc::strong_count(open) - 1;
    // Set at a hand-over to a process that takes the connections.
    let parked_to: Arc<OnceLock<ParkSink<S>>> = Arc::default();
    let Moves { out, mut incoming } = moves;
    let ending = loop {
        let now = *mode.borrow_and_update();
        match now {
            Listening::Accept => {}
            Listening::Pause => {
                if mode.changed().await.is_err() {
                    break Listening::Stop;
                }
                continue;
            }
            ending => break ending,
        }
        let moved_in = async {
            match incoming.as_mut() {
                Some(incoming) => incoming.recv().await,
                None => std::future::pending().await,
            }
        };
        let (stream, read_ahead) = tokio::select! {
            accepted = accept() => match accepted {
                Ok(stream) => (stream, Bytes::new()),
                Err(err) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("{what}: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            moved = moved_in => match moved {
                Some(Parked { stream, read_ahead }) => (stream, read_ahead),
                None => {
                    incoming = None;
                    continue;
                }
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    break Listening::Stop;
                }
                continue;
            }
        };
        let (counted, stopping, handler, parked_to) =
            (open.clone(), stop.subscribe(), handler.clone(), parked_to.clone());
        tokio::spawn(async move {
            let _counted = counted;
            let served = parked::serve_connection(stream, read_ahead, handler, stopping).await;
            // Parked only when told to at a hand-over that takes it.
            if let (parked::Served::Parked(parked), Some(to)) = (served, parked_to.get()) {
                to(parked);
            }
        });
    };
    // Close our copy of the socket now, not after the drain: on shutdown a
    // client must be refused at once rather than wait in the backlog.
    drop(accept);
    drop(incoming);
    let deadline = tokio::time::Instant::now() + drain;
    let moving = ending == Listening::HandOver
        && out.and_then(|out| out()).is_some_and(|to| parked_to.set(to).is_ok());
    if moving {
        // Each connection parks at its next request boundary (an idle one
        // at once) and goes to the new process.
        stop.send_replace(Ending::Park);
    }
    if ending == Listening::HandOver {
        // Closing an idle keep-alive connection races with a request the
        // client may be sending on it; instead each connection closes after
        // answering its next request (with `Connection: close`).
        while still_open(&open) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let left = still_open(&open);
    stop.send_replace(Ending::Close);
    while still_open(&open) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if moving && left > 0 {
        tracing::warn!(
            "{what}: {left} connection(s) did not reach a request boundary within {drain:?} \
             (server.shutdown_timeout) to move to the new process; closing them"
        );
    } else if still_open(&open) > 0 {
        tracing::warn!("{what}: connections still open after {drain:?}; closing them");
    }
}

/// Sends a request to the process at `to` (an upgrade's new process) and
/// returns its answer, so a client of the old process sees the new state.
pub async fn forward(to: SocketAddr, parts: &hyper::http::request::Parts, body: Bytes) -> Response {
    let unreachable =
        |err: &dyn std::fmt::Display| error(502, format!("the new process did not answer: {err}"));
    let stream = match tokio::net::TcpStream::connect(to).await {
        Ok(stream) => stream,
        Err(err) => return unreachable(&err),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(err) => return unreachable(&err),
    };
    tokio::spawn(connection);
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.path_and_query().map_or_else(
        || "/".parse().expect("a path"),
        |p| p.as_str().parse().expect("a path and query parses again"),
    );
    for (name, value) in &parts.headers {
        if !is_hop_by_hop(name) {
            request.headers_mut().append(name, value.clone());
        }
    }
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(err) => return unreachable(&err),
    };
    let (answer, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => return unreachable(&err),
    };
    let mut forwarded = hyper::Response::new(Full::new(body));
    *forwarded.status_mut() = answer.status;
    for (name, value) in &answer.headers {
        if !is_hop_by_hop(name) {
            forwarded.headers_mut().append(name, value.clone());
        }
    }
    forwarded
}

fn is_hop_by_hop(name: &hyper::header::HeaderName) -> bool {
    use hyper::header::{CONNECTION, CONTENT_LENGTH, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
    [CONNECTION, CONTENT_LENGTH, TE, TRAILER, TRANSFER_ENCODING, UPGRADE].contains(name)
        || name.as_str() == "keep-alive"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_bytes_decodes_exactly() {
        let query = Some("a=1&instance=room+1%2B%FF&instance=second&flag");
        assert_eq!(query_bytes(query, "instance").as_deref(), Some(b"room 1+\xFF".as_slice()));
        assert_eq!(query_bytes(query, "flag").as_deref(), Some(b"".as_slice()));
        assert_eq!(query_bytes(Some("inst%61nce=x"), "instance").as_deref(), Some(b"x".as_slice()));
        assert_eq!(query_bytes(query, "missing"), None);
        assert_eq!(query_bytes(None, "instance"), None);
    }

    #[test]
    fn appending_grows_within_the_limit() {
        let mut buffer = Vec::new();
        for _ in 0..1000 {
            assert!(append_within(&mut buffer, b"x", 1000).is_ok());
            assert!(buffer.capacity() <= 1000 && buffer.capacity() <= 2 * buffer.len().max(1));
        }
        assert!(matches!(append_within(&mut buffer, b"x", 1000), Err(BodyError::TooLarge)));
        assert_eq!(buffer.len(), 1000);
    }
}
