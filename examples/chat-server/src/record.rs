//! A parked session as bytes, for the new process ([`crate::upgrade`]
//! sends one record per session, its socket attached): a version byte, the
//! session id, its room, the bytes read ahead of tungstenite, the bytes
//! written behind it (frames the socket had not taken), the message whose
//! call had not run, the pushes not yet written. Numbers are
//! little-endian; byte strings carry a u32 length.

use std::collections::VecDeque;

use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::session::Parked;

/// The layout below; a new process reads only its own.
pub const VERSION: u8 = 2;

const TEXT: u8 = 1;
const BINARY: u8 = 2;
const CLOSE: u8 = 3;

/// A session as it arrives, before its socket is attached.
pub struct Record {
    pub id: u64,
    pub room: String,
    pub read_ahead: Vec<u8>,
    pub write_behind: Vec<u8>,
    pub unrun: Option<Message>,
    pub outgoing: VecDeque<Message>,
}

pub fn encode(session: &Parked) -> Vec<u8> {
    let mut out = vec![VERSION];
    out.extend_from_slice(&session.id.to_le_bytes());
    put_bytes(&mut out, session.room.as_bytes());
    put_bytes(&mut out, session.socket.get_ref().read_ahead());
    put_bytes(&mut out, session.socket.get_ref().write_behind());
    out.push(u8::from(session.unrun.is_some()));
    session.unrun.iter().for_each(|message| put_message(&mut out, message));
    out.extend_from_slice(&(session.outgoing.len() as u32).to_le_bytes());
    session.outgoing.iter().for_each(|message| put_message(&mut out, message));
    out
}

pub fn decode(bytes: &[u8]) -> Result<Record, String> {
    let mut rest = Reader(bytes);
    let version = rest.u8("the version")?;
    if version != VERSION {
        return Err(format!("a session record of layout {version}; this build reads layout {VERSION}"));
    }
    let id = u64::from_le_bytes(rest.take(8, "the session id")?.try_into().expect("8 bytes"));
    let room = String::from_utf8(rest.bytes("the room")?.to_vec())
        .map_err(|_| format!("session {id}'s room is not UTF-8"))?;
    let read_ahead = rest.bytes("the bytes read ahead")?.to_vec();
    let write_behind = rest.bytes("the bytes written behind")?.to_vec();
    let unrun = match rest.u8("the unrun message")? {
        0 => None,
        _ => Some(rest.message()?),
    };
    let count = rest.u32("the count of queued pushes")?;
    let outgoing = (0..count).map(|_| rest.message()).collect::<Result<_, _>>()?;
    if !rest.0.is_empty() {
        return Err(format!("session {id}'s record has {} bytes past its end", rest.0.len()));
    }
    Ok(Record { id, room, read_ahead, write_behind, unrun, outgoing })
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_message(out: &mut Vec<u8>, message: &Message) {
    match message {
        Message::Text(text) => {
            out.push(TEXT);
            put_bytes(out, text.as_bytes());
        }
        Message::Close(frame) => {
            out.push(CLOSE);
            let (code, reason) =
                frame.as_ref().map_or((1000, ""), |frame| (frame.code.into(), frame.reason.as_str()));
            out.extend_from_slice(&u16::to_le_bytes(code));
            put_bytes(out, reason.as_bytes());
        }
        other => {
            out.push(BINARY);
            put_bytes(out, &other.clone().into_data());
        }
    }
}

/// The bytes of a record not yet read.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize, what: &str) -> Result<&'a [u8], String> {
        if self.0.len() < count {
            return Err(format!(
                "a session record ends in {what}: {count} bytes expected, {} left",
                self.0.len()
            ));
        }
        let (taken, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(taken)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], String> {
        let length = self.u32(what)? as usize;
        self.take(length, what)
    }

    fn message(&mut self) -> Result<Message, String> {
        match self.u8("a queued message")? {
            TEXT => {
                let text = std::str::from_utf8(self.bytes("a text message")?)
                    .map_err(|_| "a queued text message is not UTF-8".to_owned())?;
                Ok(Message::text(text))
            }
            BINARY => Ok(Message::binary(self.bytes("a binary message")?.to_vec())),
            CLOSE => {
                let code = u16::from_le_bytes(self.take(2, "a close code")?.try_into().expect("2 bytes"));
                let reason = std::str::from_utf8(self.bytes("a close reason")?)
                    .map_err(|_| "a queued close reason is not UTF-8".to_owned())?;
                Ok(Message::Close(Some(CloseFrame { code: code.into(), reason: reason.into() })))
            }
            kind => Err(format!("a queued message of kind {kind}; this build knows 1 to 3")),
        }
    }
}
