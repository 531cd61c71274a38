//! A room of sessions, on the raw `Module` trait, for the engine's and the
//! daemon's session tests.
//!
//! | hook or method | what it does |
//! |---|---|
//! | `on_join` | refuses a request containing `deny` (naming it), after sending `sorry` and broadcasting `turned away N` if it also contains `loud`; otherwise keeps the session and broadcasts `joined N` |
//! | `on_message` | `close-me`: closes the sender with `bye`; `fail-me`: returns an error; `panic-me`: panics; otherwise numbers the message (`seq`, per room), sends `ack SEQ` to the sender and broadcasts `N:SEQ:TEXT` |
//! | `on_leave` | forgets the session and broadcasts `left N` |
//! | `on_tick` | counts ticks |
//! | `ticks`, `sessions`, `seq`, `version` | the tick count, the session ids (JSON), the last message number, the version |
//! | `announce` | broadcasts its payload (a push from a method) |
//! | `announce-later` | `ctx.after(10 ms, "announce", payload)` (a push from a timer) |
//!
//! The state is JSON, the same in both versions (1.0.0 and, with feature
//! `v2`, 2.0.0), so a swap carries the sessions over.

use std::collections::BTreeSet;

use hotswap_module::{Context, Module, ModuleError, Previous, Reply, Session, export_module};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Room {
    sessions: BTreeSet<u64>,
    seq: u64,
    ticks: u64,
}

impl Module for Room {
    const NAME: &'static str = "room";
    const VERSION: &'static str = if cfg!(feature = "v2") { "2.0.0" } else { "1.0.0" };

    fn init(previous: Option<Previous<'_>>) -> Result<Self, ModuleError> {
        match previous {
            None => Ok(Room::default()),
            Some(previous) => Ok(serde_json::from_slice(previous.state())?),
        }
    }

    fn handle(&mut self, method: &str, _payload: &[u8]) -> Result<Vec<u8>, ModuleError> {
        let reply = match method {
            "ticks" => self.ticks.to_string(),
            "sessions" => serde_json::to_string(&self.sessions)?,
            "seq" => self.seq.to_string(),
            "version" => Self::VERSION.to_owned(),
            other => return Err(ModuleError::new(format!("room has no method {other:?}"))),
        };
        Ok(reply.into_bytes())
    }

    fn call(
        &mut self,
        ctx: &mut Context,
        method: &str,
        payload: &[u8],
        reply: &mut Reply,
    ) -> Result<(), ModuleError> {
        match method {
            "announce" => ctx.broadcast(payload),
            "announce-later" => ctx.after(std::time::Duration::from_millis(10), "announce", payload),
            _ => {
                reply.push(&self.handle(method, payload)?);
                Ok(())
            }
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, ModuleError> {
        Ok(serde_json::to_vec(self)?)
    }

    fn on_join(&mut self, ctx: &mut Context, session: Session, request: &[u8]) -> Result<(), ModuleError> {
        let request = String::from_utf8_lossy(request);
        if request.contains("deny") {
            if request.contains("loud") {
                // Pushed before refusing: delivered all the same.
                ctx.send(session, "sorry")?;
                ctx.broadcast(format!("turned away {}", session.id()))?;
            }
            return Err(ModuleError::new(format!("this room turns away {request:?}")));
        }
        self.sessions.insert(session.id());
        ctx.broadcast(format!("joined {}", session.id()))
    }

    fn on_message(&mut self, ctx: &mut Context, session: Session, message: &[u8]) -> Result<(), ModuleError> {
        match message {
            b"close-me" => return ctx.close(session, "bye"),
            b"fail-me" => return Err(ModuleError::new("this room refuses \"fail-me\"")),
            b"panic-me" => panic!("the room was told to panic"),
            _ => {}
        }
        self.seq += 1;
        ctx.send(session, format!("ack {}", self.seq))?;
        ctx.broadcast(format!("{}:{}:{}", session.id(), self.seq, String::from_utf8_lossy(message)))
    }

    fn on_leave(&mut self, ctx: &mut Context, session: Session) {
        self.sessions.remove(&session.id());
        // A refused push cannot be reported from on_leave; none is expected here.
        let _ = ctx.broadcast(format!("left {}", session.id()));
    }

    fn on_tick(&mut self, _ctx: &mut Context) -> Result<(), ModuleError> {
        self.ticks += 1;
        Ok(())
    }
}

#[cfg(not(feature = "base-descriptor"))]
export_module!(Room);

/// With feature `base-descriptor` (ROOM_BASE_DESCRIPTOR): the descriptor
/// says it is as long as one built before the session hooks were appended,
/// though its hooks are filled in. A host must not read past the size a
/// module gives, so it must see no hooks: a join is accepted without
/// `on_join` (which would refuse `deny`).
#[cfg(feature = "base-descriptor")]
mod base_descriptor {
    use hotswap_module::__private::abi::{
        ABI_VERSION, DESCRIPTOR_BASE_SIZE, DescriptorHeader, MAGIC, ModuleDescriptor,
    };
    use hotswap_module::__private::descriptor;

    static DESCRIPTOR: ModuleDescriptor = ModuleDescriptor {
        header: DescriptorHeader {
            magic: MAGIC,
            abi_version: ABI_VERSION,
            descriptor_size: DESCRIPTOR_BASE_SIZE as u32,
        },
        ..descriptor::<super::Room>(true)
    };

    #[unsafe(no_mangle)]
    pub extern "C" fn hotswap_module_descriptor() -> *const DescriptorHeader {
        // The header is the first field of the #[repr(C)] descriptor.
        core::ptr::from_ref(&DESCRIPTOR).cast()
    }
}
