//! A blocking tungstenite client for the daemon's WebSocket sessions and
//! the `room` test module's protocol (`crates/test-modules/modules/room`):
//! `joined N`, `ack SEQ`, `ID:SEQ:TEXT` broadcasts, methods `sessions`,
//! `seq`. Shared by the session tests (`sockets`, `session_handover`).

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tungstenite::{Message, WebSocket};

use crate::Daemon;

pub type Client = WebSocket<TcpStream>;

/// Opens a session at `path` (with its query); panics with the log if refused.
pub fn connect(daemon: &Daemon, path: &str) -> Client {
    try_connect(daemon, path).unwrap_or_else(|err| panic!("connecting to {path}: {err}\n{}", daemon.log()))
}

pub fn try_connect(daemon: &Daemon, path: &str) -> Result<Client, tungstenite::Error> {
    try_connect_at(daemon.public(), path)
}

/// As [`try_connect`], for a thread that has the public address but not the daemon.
pub fn try_connect_at(public: SocketAddr, path: &str) -> Result<Client, tungstenite::Error> {
    let stream = TcpStream::connect(public).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let url = format!("ws://{public}{path}");
    match tungstenite::client(url.as_str(), stream) {
        Ok((client, _)) => Ok(client),
        Err(tungstenite::HandshakeError::Failure(err)) => Err(err),
        Err(tungstenite::HandshakeError::Interrupted(_)) => panic!("a blocking handshake was interrupted"),
    }
}

/// The next text frame.
pub fn next_text(client: &mut Client) -> String {
    loop {
        match client.read().expect("a frame") {
            Message::Text(text) => return text.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads until a text frame that `matches`, skipping the others.
pub fn until(client: &mut Client, matches: impl Fn(&str) -> bool) -> String {
    loop {
        let text = next_text(client);
        if matches(&text) {
            return text;
        }
    }
}

pub fn send(client: &mut Client, text: &str) {
    client.send(Message::text(text)).unwrap();
}

/// Calls the room module's `method` on `instance` over HTTP.
pub fn call(daemon: &Daemon, method: &str, instance: &str) -> String {
    daemon.text("POST", &format!("/call/room/{method}?instance={instance}"), "")
}

/// The session id from `joined N`.
pub fn joined_id(client: &mut Client) -> u64 {
    until(client, |text| text.starts_with("joined ")).trim_start_matches("joined ").parse().unwrap()
}

/// A client's text frame as it goes on the wire (masked with `mask`, as
/// every client frame must be), for tests that write raw bytes.
pub fn masked_text_frame(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    assert!(payload.len() < 126, "a one-byte length only");
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend(mask);
    frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
    frame
}
