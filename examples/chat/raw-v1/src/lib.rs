//! A chat room on the raw `Module` trait, as the docs taught it before the
//! typed layer: every method parses its payload and encodes its reply by
//! hand. BENCHMARKS.md counts its lines of plumbing against its lines of
//! logic, beside the same module written with `#[hotswap_module::module]`
//! (`examples/chat/typed-v1`).

use hotswap_module::{Module, ModuleError, Previous, export_module};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Chat {
    messages: Vec<Message>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    author: String,
    text: String,
}

#[derive(Deserialize)]
struct Post {
    author: String,
    text: String,
}

impl Module for Chat {
    const NAME: &'static str = "chat";
    const VERSION: &'static str = "1.0.0";

    fn init(previous: Option<Previous<'_>>) -> Result<Self, ModuleError> {
        match previous {
            None => Ok(Chat::default()),
            Some(previous) => serde_json::from_slice(previous.state())
                .map_err(|e| ModuleError::new(format!("cannot read the chat snapshot: {e}"))),
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
            other => Err(ModuleError::new(format!("unknown method {other:?}: chat has post and history"))),
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, ModuleError> {
        serde_json::to_vec(self).map_err(|e| ModuleError::new(e.to_string()))
    }
}

impl Chat {
    fn post(&mut self, post: Post) -> Result<usize, ModuleError> {
        if post.text.trim().is_empty() {
            return Err(ModuleError::new("a message needs some text"));
        }
        self.messages.push(Message { author: post.author, text: post.text });
        Ok(self.messages.len() - 1)
    }

    fn history(&self, last: Option<usize>) -> Vec<Message> {
        let n = last.unwrap_or(self.messages.len()).min(self.messages.len());
        self.messages[self.messages.len() - n..].to_vec()
    }
}

export_module!(Chat);
