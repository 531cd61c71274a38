//! The chat room's second version on the raw `Module` trait: messages get an
//! id and reactions, and `react` is new. Its `init` migrates version 1's
//! snapshot, which has no format tag, so it tells the layouts apart by
//! trying its own first. BENCHMARKS.md counts its plumbing against its
//! logic, beside `examples/chat/typed-v2`.

use hotswap_module::{Module, ModuleError, Previous, export_module};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Chat {
    layout: u32,
    messages: Vec<Message>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    id: u64,
    author: String,
    text: String,
    reactions: u32,
}

/// Version 1's state, kept to read its snapshots.
#[derive(Deserialize)]
struct ChatV1 {
    messages: Vec<MessageV1>,
}

#[derive(Deserialize)]
struct MessageV1 {
    author: String,
    text: String,
}

/// Just enough of a snapshot to see which layout it has.
#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    layout: u32,
}

#[derive(Deserialize)]
struct Post {
    author: String,
    text: String,
}

impl Module for Chat {
    const NAME: &'static str = "chat";
    const VERSION: &'static str = "2.0.0";

    fn init(previous: Option<Previous<'_>>) -> Result<Self, ModuleError> {
        let Some(previous) = previous else {
            return Ok(Chat { layout: 2, messages: Vec::new() });
        };
        let header: Header = serde_json::from_slice(previous.state())
            .map_err(|e| ModuleError::new(format!("cannot read the chat snapshot: {e}")))?;
        match header.layout {
            2 => serde_json::from_slice(previous.state())
                .map_err(|e| ModuleError::new(format!("cannot read the chat snapshot: {e}"))),
            0 => {
                let old: ChatV1 = serde_json::from_slice(previous.state())
                    .map_err(|e| ModuleError::new(format!("cannot read the chat 1 snapshot: {e}")))?;
                Ok(Chat::from_v1(old))
            }
            other => Err(ModuleError::new(format!("chat 2.0.0 cannot read layout {other}"))),
        }
    }

    fn handle(&mut self, method: &str, payload: &[u8]) -> Result<Vec<u8>, ModuleError> {
        match method {
            "post" => {
                let post: Post = serde_json::from_slice(payload)
                    .map_err(|e| ModuleError::new(format!("post takes {{author, text}}: {e}")))?;
                let id = self.post(post)?;
                serde_json::to_vec(&id).map_err(|e| ModuleError::new(e.to_string()))
            }
            "history" => {
                let last: Option<usize> = if payload.is_empty() {
                    None
                } else {
                    serde_json::from_slice(payload)
                        .map_err(|e| ModuleError::new(format!("history takes a count or nothing: {e}")))?
                };
                serde_json::to_vec(&self.history(last)).map_err(|e| ModuleError::new(e.to_string()))
            }
            "react" => {
                let id: u64 = serde_json::from_slice(payload)
                    .map_err(|e| ModuleError::new(format!("react takes a message id: {e}")))?;
                let reactions = self.react(id)?;
                serde_json::to_vec(&reactions).map_err(|e| ModuleError::new(e.to_string()))
            }
            other => {
                Err(ModuleError::new(format!("unknown method {other:?}: chat has post, history and react")))
            }
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, ModuleError> {
        serde_json::to_vec(self).map_err(|e| ModuleError::new(e.to_string()))
    }
}

impl Chat {
    fn from_v1(old: ChatV1) -> Chat {
        let messages = old.messages.into_iter().zip(0..);
        let messages = messages.map(|(m, id)| Message { id, author: m.author, text: m.text, reactions: 0 });
        Chat { layout: 2, messages: messages.collect() }
    }

    fn post(&mut self, post: Post) -> Result<u64, ModuleError> {
        if post.text.trim().is_empty() {
            return Err(ModuleError::new("a message needs some text"));
        }
        let id = self.messages.len() as u64;
        self.messages.push(Message { id, author: post.author, text: post.text, reactions: 0 });
        Ok(id)
    }

    fn history(&self, last: Option<usize>) -> Vec<Message> {
        let n = last.unwrap_or(self.messages.len()).min(self.messages.len());
        self.messages[self.messages.len() - n..].to_vec()
    }

    fn react(&mut self, id: u64) -> Result<u32, ModuleError> {
        let message = self.messages.iter_mut().find(|m| m.id == id);
        let message = message.ok_or_else(|| ModuleError::new(format!("no message {id}")))?;
        message.reactions += 1;
        Ok(message.reactions)
    }
}

export_module!(Chat);
