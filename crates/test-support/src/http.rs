//! A minimal HTTP/1.1 client over any byte stream (TCP or the admin's Unix
//! socket), one request at a time on a connection the caller owns.
//!
//! Hand-written on purpose (no HTTP client crate): tests of the daemon's
//! public port and of process upgrades need the raw exchange. They write
//! exactly the bytes they choose (a body that stops half way, pipelined
//! requests), read the response as it arrives, and tell apart *where* a
//! connection broke: before the status line, in the headers or in the body.
//! A client library would retry, pool or hide exactly those events.
//!
//! Responses are framed by `Content-Length`; without one the body runs to
//! the end of the connection (HTTP/1.1's rule for a response that closes).
//! Chunked responses are refused: the daemon never sends one. Not for
//! answers to `HEAD`.

use std::fmt;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};

/// The header that names the pid of the daemon process that answered.
pub const PID_HEADER: &str = "hotswap-pid";

/// `Connection: close`, for [`write_request`]'s `headers`: the server closes
/// the connection after its answer.
pub const CLOSE: (&str, &str) = ("Connection", "close");

/// One response: status, headers (names in lower case, values trimmed) and
/// the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (give it in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The pid of the daemon process that answered (`hotswap-pid`), if said.
    pub fn pid(&self) -> Option<u32> {
        self.header(PID_HEADER).and_then(|pid| pid.parse().ok())
    }

    /// Whether the server closes the connection after this response: it
    /// said `Connection: close`, or the body ran to the end of the stream.
    pub fn closes(&self) -> bool {
        self.header("connection").is_some_and(|value| value.eq_ignore_ascii_case("close"))
            || (self.header("content-length").is_none() && !bodiless(self.status))
    }
}

/// Where in an exchange the connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    WritingRequest,
    BeforeStatusLine,
    InStatusLine,
    InHeaders,
    InBody,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::WritingRequest => "writing the request",
            Stage::BeforeStatusLine => "before the status line",
            Stage::InStatusLine => "in the status line",
            Stage::InHeaders => "in the headers",
            Stage::InBody => "in the body",
        })
    }
}

/// Why an exchange failed, and at which stage. The error's kind is the
/// socket's (`ConnectionReset`, `UnexpectedEof`, `WouldBlock` on a read
/// timeout, ...), so a caller can class failures by it.
#[derive(Debug)]
pub struct ExchangeError {
    pub error: io::Error,
    pub stage: Stage,
}

impl ExchangeError {
    fn at(stage: Stage) -> impl FnOnce(io::Error) -> ExchangeError {
        move |error| ExchangeError { error, stage }
    }

    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?}) {}", self.error, self.error.kind(), self.stage)
    }
}

impl std::error::Error for ExchangeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Keeps the socket's error kind; the message says the stage too.
impl From<ExchangeError> for io::Error {
    fn from(err: ExchangeError) -> io::Error {
        io::Error::new(err.error.kind(), err.to_string())
    }
}

/// Writes one HTTP/1.1 request with a `Content-Length` (keep-alive unless
/// `headers` say otherwise, see [`CLOSE`]) in one write, and flushes.
pub fn write_request(
    stream: &mut impl Write,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> io::Result<()> {
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request += &format!("{name}: {value}\r\n");
    }
    request += "\r\n";
    let mut request = request.into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request)?;
    stream.flush()
}

/// Reads one response as it arrives.
pub fn read_response(reader: &mut impl BufRead) -> Result<Response, ExchangeError> {
    let mut line = String::new();
    if reader.read_line(&mut line).map_err(ExchangeError::at(Stage::BeforeStatusLine))? == 0 {
        return Err(ExchangeError::at(Stage::BeforeStatusLine)(ErrorKind::UnexpectedEof.into()));
    }
    let status: u16 = line.split_whitespace().nth(1).and_then(|code| code.parse().ok()).ok_or_else(|| {
        ExchangeError::at(Stage::InStatusLine)(io::Error::other(format!("not an HTTP status line: {line:?}")))
    })?;
    let mut headers = Vec::new();
    let mut length = None;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(ExchangeError::at(Stage::InHeaders))? == 0 {
            return Err(ExchangeError::at(Stage::InHeaders)(ErrorKind::UnexpectedEof.into()));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else { continue };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
        match name.as_str() {
            "content-length" => {
                length = Some(value.parse::<usize>().map_err(|err| {
                    ExchangeError::at(Stage::InHeaders)(io::Error::other(format!(
                        "Content-Length {value:?}: {err}"
                    )))
                })?)
            }
            "transfer-encoding" => {
                return Err(ExchangeError::at(Stage::InHeaders)(io::Error::other(
                    "chunked responses are not expected",
                )));
            }
            _ => {}
        }
        headers.push((name, value));
    }
    let mut body = Vec::new();
    match length {
        _ if bodiless(status) => {}
        Some(length) => {
            body.resize(length, 0);
            reader.read_exact(&mut body).map_err(ExchangeError::at(Stage::InBody))?;
        }
        None => {
            reader.read_to_end(&mut body).map_err(ExchangeError::at(Stage::InBody))?;
        }
    }
    Ok(Response { status, headers, body })
}

/// 1xx, 204 and 304 responses never have a body, whatever their headers say.
fn bodiless(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

/// Writes one request on `reader`'s stream and reads its response.
pub fn exchange<S: Read + Write>(
    reader: &mut BufReader<S>,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Result<Response, ExchangeError> {
    write_request(reader.get_mut(), method, path, body, headers)
        .map_err(ExchangeError::at(Stage::WritingRequest))?;
    read_response(reader)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Response, ExchangeError> {
        read_response(&mut io::Cursor::new(bytes.to_vec()))
    }

    #[test]
    fn a_request_is_written_with_its_length_and_headers() {
        let mut wire = Vec::new();
        write_request(&mut wire, "POST", "/call/counter/add?instance=a", b"12", &[CLOSE]).unwrap();
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "POST /call/counter/add?instance=a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\
             Connection: close\r\n\r\n12"
        );
    }

    #[test]
    fn a_response_is_framed_by_content_length() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nHotswap-Pid: 42\r\n\r\nabcHTTP/1.1 404";
        let response = read(wire).unwrap();
        assert_eq!((response.status, response.body.as_slice()), (200, b"abc".as_slice()));
        assert_eq!(response.pid(), Some(42));
        assert!(!response.closes());
    }

    #[test]
    fn a_response_without_a_length_runs_to_the_end_of_the_connection() {
        let response = read(b"HTTP/1.1 200 OK\r\n\r\nto the end").unwrap();
        assert_eq!(response.body, b"to the end");
        assert!(response.closes());
    }

    #[test]
    fn where_a_connection_broke_is_named() {
        let stage = |wire: &[u8]| read(wire).map(|_| ()).unwrap_err();
        let before = stage(b"");
        assert_eq!((before.stage, before.kind()), (Stage::BeforeStatusLine, ErrorKind::UnexpectedEof));
        assert_eq!(stage(b"HTTP/1.1 200 OK\r\nContent-Le").stage, Stage::InHeaders);
        let body = stage(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc");
        assert_eq!((body.stage, body.kind()), (Stage::InBody, ErrorKind::UnexpectedEof));
        assert_eq!(stage(b"garbage\r\n").stage, Stage::InStatusLine);
        assert_eq!(stage(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").stage, Stage::InHeaders);
        let io: io::Error = body.into();
        assert_eq!(io.kind(), ErrorKind::UnexpectedEof, "the kind survives: {io}");
        assert!(io.to_string().ends_with("in the body"), "{io}");
    }
}
