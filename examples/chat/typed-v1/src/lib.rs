//! The chat room of `examples/chat/raw-v1`, written with the typed layer:
//! the same methods, arguments and replies, and no plumbing.

use hotswap_module::ModuleError;
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

#[derive(Debug, Deserialize)]
pub struct Post {
    author: String,
    text: String,
}

#[hotswap_module::module(name = "chat", version = "1.0.0", layout = 1)]
impl Chat {
    pub fn post(&mut self, post: Post) -> Result<usize, ModuleError> {
        if post.text.trim().is_empty() {
            return Err(ModuleError::new("a message needs some text"));
        }
        self.messages.push(Message { author: post.author, text: post.text });
        Ok(self.messages.len() - 1)
    }

    pub fn history(&self, last: Option<usize>) -> Vec<Message> {
        let n = last.unwrap_or(self.messages.len()).min(self.messages.len());
        self.messages[self.messages.len() - n..].to_vec()
    }
}
