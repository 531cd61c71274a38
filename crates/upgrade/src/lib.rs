//! Replace a running server's binary without closing a connection: the new
//! process gets the listening sockets, the state and the open connections,
//! and the old one exits. Any server can use it; the `hotswap` daemon is one
//! user (docs/upgrade.md, "Embedding the upgrade").
//!
//! * [`handover`]: the old process's side. [`handover::upgrade`] starts the
//!   new binary and drives the protocol; the host says what freezing, its
//!   state and committing mean by implementing [`handover::Handover`].
//! * [`takeover`]: the new process's side: HELLO, the state, READY, the
//!   commit, the connections that move after it.
//! * [`protocol`]: the frames, in order, and which kinds are the host's.
//! * [`listen`]: listening sockets travel as inherited file descriptors,
//!   announced with systemd's `LISTEN_FDS` / `LISTEN_FDNAMES` convention.
//!   They are the *same* sockets (one accept queue), so no connection
//!   waiting to be accepted is lost, and the same code takes sockets from
//!   systemd socket activation at first start.
//! * [`frame`]: the control channel between the two processes carries
//!   length-prefixed, versioned frames with a hard size limit.
//! * [`pass`]: the same frames with file descriptors attached (`SCM_RIGHTS`),
//!   to hand open connections to the new process.
//! * [`notify`]: `sd_notify` datagrams (`READY=1`, `RELOADING=1`,
//!   `MAINPID=`, `STOPPING=1`) when `NOTIFY_SOCKET` is set.

pub mod frame;
pub mod handover;
pub mod listen;
pub mod notify;
pub mod pass;
pub mod protocol;
pub mod takeover;
