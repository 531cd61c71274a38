//! A chat room with the typed layer's session hooks: a client joins with
//! `?name=ann` (refused without a name, or with one taken), each message it
//! sends (`{"text": ".."}`) is broadcast to the room with its author's
//! session, a leave is announced, and the room counts its ticks.

use std::collections::BTreeMap;

use hotswap_module::{Context, ModuleError, Session};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Room {
    /// Session id → name: the per-session data is state like any other, so
    /// it moves with the state through a swap.
    members: BTreeMap<u64, String>,
    /// Messages said so far: each `Said` carries its number, so a host can
    /// check that it saw the room's pushes in the order they were made.
    said: u64,
    ticks: u64,
}

/// The join request's query string.
#[derive(Debug, Deserialize)]
pub struct Join {
    name: String,
}

/// A message a member sends.
#[derive(Debug, Deserialize)]
pub struct Say {
    text: String,
}

/// What the room pushes, as JSON.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// To the session that joined: who is in the room, itself included.
    Welcome {
        session: u64,
        members: Vec<String>,
    },
    Joined {
        session: u64,
        name: String,
    },
    /// The `n`th message said in the room (from 1).
    Said {
        n: u64,
        session: u64,
        name: String,
        text: String,
    },
    Left {
        session: u64,
        name: String,
    },
}

#[hotswap_module::module(name = "chat-room", version = "1.0.0", layout = 1)]
impl Room {
    fn on_join(&mut self, ctx: &mut Context, session: Session, join: Join) -> Result<(), ModuleError> {
        let name = join.name.trim();
        if name.is_empty() {
            return Err("a name is needed to join: connect with ?name=..".into());
        }
        if self.members.values().any(|taken| taken == name) {
            return Err(format!("the name {name:?} is taken in this room").into());
        }
        self.members.insert(session.id(), name.to_owned());
        let members = self.members.values().cloned().collect();
        ctx.send_json(session, &Event::Welcome { session: session.id(), members })?;
        ctx.broadcast_json(&Event::Joined { session: session.id(), name: name.to_owned() })
    }

    fn on_message(&mut self, ctx: &mut Context, session: Session, say: Say) -> Result<(), ModuleError> {
        let name = self.members.get(&session.id()).ok_or("this session has not joined the room")?.clone();
        self.said += 1;
        ctx.broadcast_json(&Event::Said { n: self.said, session: session.id(), name, text: say.text })
    }

    fn on_leave(&mut self, ctx: &mut Context, session: Session) -> Result<(), ModuleError> {
        let name = self.members.remove(&session.id()).ok_or("a session left that had not joined")?;
        ctx.broadcast_json(&Event::Left { session: session.id(), name })
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
    }

    /// How many ticks the room has had.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// The names in the room, in session order.
    pub fn members(&self) -> Vec<String> {
        self.members.values().cloned().collect()
    }
}
