//! The parts of a whole-process upgrade that are about processes, not about
//! what the server does: how the new process gets the old one's listening
//! sockets, how the two talk, and how systemd is kept informed.
//!
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
//!
//! The daemon (the `hotswap` binary) drives the upgrade itself: when to
//! freeze, what state to send, when to hand over.

pub mod frame;
pub mod listen;
pub mod notify;
pub mod pass;
