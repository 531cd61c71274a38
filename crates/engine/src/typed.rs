//! Typed calls for hosts (the `serde` feature): the argument is encoded as
//! JSON and the reply decoded from JSON, which is how typed modules (written
//! with `#[hotswap_module::module]`) read their payloads and write their
//! replies.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::{Engine, InstanceHandle};
use crate::error::CallError;

/// How many bytes of a reply that does not decode the error quotes.
const REPLY_QUOTED: usize = 200;

/// Why a typed call did not return a value: the call itself, or one side of
/// its JSON.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TypedCallError {
    /// The call failed as an untyped call fails (unknown module, refusal, panic…).
    #[error(transparent)]
    Call(#[from] CallError),

    /// The argument could not be encoded as JSON (a map with keys that are
    /// not strings, a `Serialize` impl that fails); the call was not made.
    #[error("cannot encode the argument of '{module}' method '{method}' ({type_name}) as JSON: {source}")]
    EncodeArgument { module: String, method: String, type_name: &'static str, source: serde_json::Error },

    /// The call was made (its effects stand) but its reply is not the JSON
    /// of the type asked for.
    #[error(
        "the reply of '{module}' method '{method}' is not JSON of {type_name}: {source}; the reply was {reply:?}"
    )]
    DecodeReply {
        module: String,
        method: String,
        type_name: &'static str,
        /// The start of the reply, as text.
        reply: String,
        source: serde_json::Error,
    },
}

impl Engine {
    /// [`call`](Engine::call) with a typed argument and reply: `arg` is sent
    /// as JSON and the reply decoded as JSON into `R`. An empty reply reads
    /// as `null`, so `()` and `Option` replies work with modules that answer
    /// nothing.
    pub fn call_typed<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        module: &str,
        instance: &str,
        method: &str,
        arg: &A,
    ) -> Result<R, TypedCallError> {
        let payload = encode(module, method, arg)?;
        let reply = self.call(module, instance, method, &payload)?;
        decode(module, method, &reply)
    }
}

impl InstanceHandle {
    /// [`call`](InstanceHandle::call) with a typed argument and reply, as
    /// [`Engine::call_typed`].
    pub fn call_typed<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        arg: &A,
    ) -> Result<R, TypedCallError> {
        let payload = encode(self.module(), method, arg)?;
        let reply = self.call(method, &payload)?;
        decode(self.module(), method, &reply)
    }
}

fn encode<A: Serialize + ?Sized>(module: &str, method: &str, arg: &A) -> Result<Vec<u8>, TypedCallError> {
    serde_json::to_vec(arg).map_err(|source| TypedCallError::EncodeArgument {
        module: module.to_owned(),
        method: method.to_owned(),
        type_name: std::any::type_name::<A>(),
        source,
    })
}

fn decode<R: DeserializeOwned>(module: &str, method: &str, reply: &[u8]) -> Result<R, TypedCallError> {
    let json = if reply.is_empty() { &b"null"[..] } else { reply };
    serde_json::from_slice(json).map_err(|source| {
        let quoted = &reply[..reply.len().min(REPLY_QUOTED)];
        let mut text = String::from_utf8_lossy(quoted).into_owned();
        if reply.len() > REPLY_QUOTED {
            text.push('…');
        }
        TypedCallError::DecodeReply {
            module: module.to_owned(),
            method: method.to_owned(),
            type_name: std::any::type_name::<R>(),
            reply: text,
            source,
        }
    })
}
