//! The chat room of `examples/chat/raw-v2`, written with the typed layer:
//! messages get an id and reactions, `react` is new, and `migrate` reads
//! version 1's layout.

use hotswap_module::{ModuleError, Previous};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Chat {
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

#[derive(Debug, Deserialize)]
pub struct Post {
    author: String,
    text: String,
}

#[hotswap_module::module(name = "chat", version = "2.0.0", layout = 2)]
impl Chat {
    fn migrate(previous: Previous<'_>) -> Result<Self, ModuleError> {
        let old: ChatV1 = previous.decode()?;
        let messages = old.messages.into_iter().zip(0..);
        let messages = messages.map(|(m, id)| Message { id, author: m.author, text: m.text, reactions: 0 });
        Ok(Chat { messages: messages.collect() })
    }

    pub fn post(&mut self, post: Post) -> Result<u64, ModuleError> {
        if post.text.trim().is_empty() {
            return Err(ModuleError::new("a message needs some text"));
        }
        let id = self.messages.len() as u64;
        self.messages.push(Message { id, author: post.author, text: post.text, reactions: 0 });
        Ok(id)
    }

    pub fn history(&self, last: Option<usize>) -> Vec<Message> {
        let n = last.unwrap_or(self.messages.len()).min(self.messages.len());
        self.messages[self.messages.len() - n..].to_vec()
    }

    pub fn react(&mut self, id: u64) -> Result<u32, ModuleError> {
        let message = self.messages.iter_mut().find(|m| m.id == id);
        let message = message.ok_or_else(|| ModuleError::new(format!("no message {id}")))?;
        message.reactions += 1;
        Ok(message.reactions)
    }
}
