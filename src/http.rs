//! What the public port and the admin API share: responses, request bodies
//! with a size limit, and an accept loop that drains its connections
//! gracefully when told to stop.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::api;

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

/// Reads a request body of at most `limit` bytes; a larger one gets 413.
pub async fn read_body(body: Incoming, headers: &HeaderMap, limit: usize) -> Result<Bytes, Response> {
    let too_large = || error(413, format!("the request body is larger than the limit of {limit} bytes"));
    let declared =
        headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|declared| declared > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(err) => Err(error(400, format!("could not read the request body: {err}"))),
    }
}

/// The value of query parameter `name`, percent-decoded.
pub fn query_param(request_query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(request_query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// A percent-decoded path segment.
pub fn segment(raw: &str) -> Option<String> {
    percent_encoding::percent_decode_str(raw).decode_utf8().ok().map(|s| s.into_owned())
}

/// Accepts connections from `accept` and serves each with `handler` until
/// `stop` turns true; then stops accepting and lets every open connection
/// finish its request in flight (each answers with `Connection: close`),
/// for at most `drain`.
pub async fn serve<S, A, AF, H, HF>(
    what: &str,
    mut accept: A,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    handler: H,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: FnMut() -> AF,
    AF: Future<Output = std::io::Result<S>>,
    H: Fn(Request<Incoming>) -> HF + Clone + Send + Sync + 'static,
    HF: Future<Output = Response> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!("{what}: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler(request).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!("connection ended: {err}");
            }
        });
    }
    // Close the listener now (it lives in `accept`), not after the drain:
    // a client must be refused at once rather than wait in the backlog.
    drop(accept);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("{what}: connections still open after {drain:?}; closing them");
    }
}
