//! The frames of a hand-over, in the order they travel on the control
//! socket ([`crate::handover`] drives the old process's side,
//! [`crate::takeover`] the new one's):
//!
//! ```text
//! new -> old  HELLO         pid (u32 LE), then what the new process takes (host bytes)
//! old -> new  STATE_BEGIN   the old process commits: wait for COMMIT after READY
//! old -> new  host frames   the state and the connections frozen with it (fds attached)
//! old -> new  STATE_END
//! new -> old  READY         pid (u32 LE)   or   REJECT   the reason (UTF-8)
//! old -> new  COMMIT        the point of no return: the new process serves
//! old -> new  host frames   connections that move after the commit (fds attached)
//! old -> new  MOVED_END     nothing more comes
//! ```
//!
//! Every kind not listed here is the host's: choose yours from
//! [`FIRST_HOST_KIND`] up. (The `hotswap` daemon's own kinds, 2, 7, 9 and
//! 10, predate this library and stay below it; [`is_protocol_kind`] is
//! what both sides check.)

/// new -> old: started, ready for the state.
pub const HELLO: u16 = 1;
/// old -> new: every host frame of the state was sent.
pub const STATE_END: u16 = 3;
/// new -> old: took the state, serves nothing yet (payload: pid).
pub const READY: u16 = 4;
/// new -> old: cannot take the state (payload: the reason).
pub const REJECT: u16 = 5;
/// old -> new: the first frame, from an old process that commits. An old
/// process that sends none is of a release before the commit existed; its
/// new process serves at READY.
pub const STATE_BEGIN: u16 = 6;
/// old -> new: committed; the new process serves from now on.
pub const COMMIT: u16 = 8;
/// old -> new: every connection that moves after the commit was sent.
pub const MOVED_END: u16 = 11;

/// The first kind that is the host's alone.
pub const FIRST_HOST_KIND: u16 = 16;

/// Whether `kind` is one of the protocol's own frames, which a host may not
/// send (the frame layer's [`crate::frame::WITH_DESCRIPTORS`] included).
pub const fn is_protocol_kind(kind: u16) -> bool {
    matches!(kind, HELLO | STATE_END | READY | REJECT | STATE_BEGIN | COMMIT | MOVED_END)
        || kind == crate::frame::WITH_DESCRIPTORS
}

/// The name the control socket travels under in `LISTEN_FDNAMES`, beside
/// the listening sockets ([`crate::listen`]).
pub const CONTROL: &str = "control";
