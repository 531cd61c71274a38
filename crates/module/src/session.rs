//! Sessions: clients connected to the host (WebSockets on the daemon) that
//! belong to one instance. The host owns the connections and which instance
//! each belongs to; a module sees them through the hooks of [`Module`]
//! (`on_join`, `on_message`, `on_leave`, `on_tick`) and pushes to them with
//! [`Context::send`], [`Context::broadcast`] and [`Context::close`].
//!
//! [`Module`]: crate::Module

use std::fmt;

use hotswap_abi::{CallStatus, HostApi, RawBytes, RawStr};

use crate::ModuleError;
use crate::context::{Backend, Context};

/// One connected client of an instance: a small id, unique in the host and
/// the same for the session's whole life. Keep per-session data in the
/// state, keyed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Session(u64);

impl Session {
    /// The session with this id (as the host numbers them).
    pub const fn from_id(id: u64) -> Self {
        Session(id)
    }

    pub const fn id(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session {}", self.0)
    }
}

/// A message a module pushed, as a [`Recorder`](crate::Recorder) keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    Send { session: Session, bytes: Vec<u8> },
    Broadcast { bytes: Vec<u8> },
    Close { session: Session, reason: String },
}

/// The offset just past a field of the host's table.
const fn end_of(offset: usize) -> usize {
    offset + size_of::<usize>()
}

impl Context {
    /// Queues `bytes` for `session`. Messages are delivered after the call
    /// returns, in the order pushed; the host sends UTF-8 as text frames and
    /// anything else as binary. Refused where the host keeps no pushes (in
    /// `init`, `snapshot` or a `Drop`) or has no sessions.
    pub fn send(&mut self, session: Session, bytes: impl AsRef<[u8]>) -> Result<(), ModuleError> {
        let bytes = bytes.as_ref();
        match &self.backend {
            Backend::Host(host) => {
                let send = Context::host_api(host, end_of(std::mem::offset_of!(HostApi, send)))
                    .and_then(|api| api.send)
                    .ok_or_else(no_sessions)?;
                // SAFETY: a function of the host's table, called with its call
                // pointer during the entry point; `bytes` outlives the call.
                let status = unsafe { send(host.call, session.0, RawBytes::new(bytes)) };
                pushed(status, "send")
            }
            Backend::Local(recorder) => {
                // SAFETY: the recorder is borrowed for the closure this context lives in.
                let recorder = unsafe { &mut **recorder };
                recorder.pushes.push(Push::Send { session, bytes: bytes.to_vec() });
                Ok(())
            }
        }
    }

    /// Queues `bytes` for every session of this instance, as [`Context::send`].
    pub fn broadcast(&mut self, bytes: impl AsRef<[u8]>) -> Result<(), ModuleError> {
        let bytes = bytes.as_ref();
        match &self.backend {
            Backend::Host(host) => {
                let broadcast = Context::host_api(host, end_of(std::mem::offset_of!(HostApi, broadcast)))
                    .and_then(|api| api.broadcast)
                    .ok_or_else(no_sessions)?;
                // SAFETY: as in `send`.
                let status = unsafe { broadcast(host.call, RawBytes::new(bytes)) };
                pushed(status, "broadcast")
            }
            Backend::Local(recorder) => {
                // SAFETY: the recorder is borrowed for the closure this context lives in.
                let recorder = unsafe { &mut **recorder };
                recorder.pushes.push(Push::Broadcast { bytes: bytes.to_vec() });
                Ok(())
            }
        }
    }

    /// Closes `session` with `reason` once what was queued for it before is
    /// delivered; its `on_leave` runs then.
    pub fn close(&mut self, session: Session, reason: &str) -> Result<(), ModuleError> {
        match &self.backend {
            Backend::Host(host) => {
                let close = Context::host_api(host, end_of(std::mem::offset_of!(HostApi, close)))
                    .and_then(|api| api.close)
                    .ok_or_else(no_sessions)?;
                // SAFETY: as in `send`.
                let status = unsafe { close(host.call, session.0, RawStr::new(reason)) };
                pushed(status, "close")
            }
            Backend::Local(recorder) => {
                // SAFETY: the recorder is borrowed for the closure this context lives in.
                let recorder = unsafe { &mut **recorder };
                recorder.pushes.push(Push::Close { session, reason: reason.to_owned() });
                Ok(())
            }
        }
    }
}

fn no_sessions() -> ModuleError {
    ModuleError::new("this host has no sessions (ctx.send, broadcast and close need a newer host)")
}

fn pushed(status: CallStatus, what: &str) -> Result<(), ModuleError> {
    if status == CallStatus::OK {
        Ok(())
    } else {
        Err(ModuleError::new(format!(
            "ctx.{what} was refused: pushes are kept during calls, hooks and ticks, not in init, snapshot or drop"
        )))
    }
}
