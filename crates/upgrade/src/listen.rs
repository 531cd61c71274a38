//! Listening sockets inherited across `exec`, announced the way systemd
//! socket activation does: the sockets are fds 3, 4, …, `LISTEN_FDS` says
//! how many and `LISTEN_FDNAMES` names them (colon-separated). When
//! `LISTEN_PID` is set it must be this process's pid.
//!
//! Passing the *same* socket (not a new one bound with `SO_REUSEPORT`)
//! keeps one accept queue: connections queued while processes change hands
//! are accepted by whichever process accepts next, and none is reset.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};

/// The first inherited descriptor, after stdin, stdout and stderr.
pub const FIRST_FD: RawFd = 3;

/// An inherited socket and its name from `LISTEN_FDNAMES` ("unknown" if unnamed).
#[derive(Debug)]
pub struct Inherited {
    pub name: String,
    pub fd: OwnedFd,
}

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes the sockets this process inherited. The first call owns them (and
/// marks them close-on-exec, so they do not leak into other children);
/// later calls return nothing.
pub fn take() -> io::Result<Vec<Inherited>> {
    let Ok(count) = std::env::var("LISTEN_FDS") else { return Ok(Vec::new()) };
    if let Ok(pid) = std::env::var("LISTEN_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return Ok(Vec::new()); // Meant for another process (our parent, say).
    }
    let count: RawFd = count
        .trim()
        .parse()
        .ok()
        .filter(|count| (0..=64).contains(count))
        .ok_or_else(|| io::Error::other(format!("LISTEN_FDS={count:?} is not a count of sockets")))?;
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(Vec::new());
    }
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let mut names = names.split(':').filter(|name| !name.is_empty());
    let mut inherited = Vec::new();
    for fd in FIRST_FD..FIRST_FD + count {
        // SAFETY: fcntl on a descriptor number reads and sets its flags; on a
        // number that is not open it fails with EBADF and changes nothing.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
            return Err(io::Error::other(format!(
                "LISTEN_FDS={count} but descriptor {fd} is not open: {}",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: by the LISTEN_FDS protocol descriptors 3..3+count belong to
        // this process and nothing else in it owns them; `TAKEN` makes sure
        // each is wrapped only once, so it is closed only once.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        inherited.push(Inherited { name: names.next().unwrap_or("unknown").to_owned(), fd });
    }
    Ok(inherited)
}

/// Starts `command` with `sockets` as its descriptors 3, 4, … (in order),
/// described by `LISTEN_FDS` and `LISTEN_FDNAMES`. The sockets stay open in
/// this process too; nothing else this process has open is inherited
/// (Rust opens every descriptor close-on-exec).
pub fn spawn_with(command: &mut Command, sockets: &[(&str, BorrowedFd<'_>)]) -> io::Result<Child> {
    let names: Vec<&str> = sockets.iter().map(|(name, _)| *name).collect();
    if names.iter().any(|name| name.is_empty() || name.contains(':')) {
        return Err(io::Error::other("socket names must be non-empty and contain no ':'"));
    }
    command
        .env("LISTEN_FDS", sockets.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env_remove("LISTEN_PID");
    // Collected before the fork: the child must not allocate.
    let mut sources: Vec<RawFd> = sockets.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    let count = sources.len() as RawFd;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed. It calls fcntl and dup2 only, and
    // writes only into `sources`, allocated before the fork. The descriptors
    // are valid: the caller lends them for the duration of this call.
    unsafe {
        command.pre_exec(move || {
            // Move every source above the target range first, so placing
            // socket i at 3+i never overwrites a source still to be placed.
            for fd in sources.iter_mut() {
                let high = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, FIRST_FD + count);
                if high == -1 {
                    return Err(io::Error::last_os_error());
                }
                *fd = high;
            }
            // dup2 gives each target a copy without close-on-exec.
            for (index, fd) in sources.iter().enumerate() {
                if libc::dup2(*fd, FIRST_FD + index as RawFd) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
    command.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    /// A child started with two sockets finds them at fds 3 and 4, in order,
    /// under their names; another socket of ours is not inherited.
    #[test]
    fn a_child_gets_the_sockets_in_order_and_nothing_else() {
        let (first, first_peer) = UnixStream::pair().unwrap();
        let (second, second_peer) = UnixStream::pair().unwrap();
        let (_unrelated, unrelated_peer) = UnixStream::pair().unwrap();
        let inode =
            |fd: &dyn AsFd| std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())).unwrap();
        let (first_inode, second_inode, unrelated_inode) =
            (inode(&first_peer), inode(&second_peer), inode(&unrelated_peer));
        let script = "echo one >&3; echo two >&4; echo \"$LISTEN_FDS $LISTEN_FDNAMES\"; \
                      for fd in /proc/self/fd/*; do readlink $fd; done";
        let mut command = Command::new("sh");
        command.args(["-c", script]).stdout(std::process::Stdio::piped());
        let child =
            spawn_with(&mut command, &[("public", first_peer.as_fd()), ("control", second_peer.as_fd())]);
        let output = child.unwrap().wait_with_output().unwrap();
        drop((first_peer, second_peer));
        let mut text = String::new();
        (&first).read_to_string(&mut text).unwrap();
        assert_eq!(text, "one\n");
        text.clear();
        (&second).read_to_string(&mut text).unwrap();
        assert_eq!(text, "two\n");
        let stdout = String::from_utf8(output.stdout).unwrap();
        let mut lines = stdout.lines();
        assert_eq!(lines.next(), Some("2 public:control"));
        let open: Vec<std::path::PathBuf> = lines.map(Into::into).collect();
        assert!(open.contains(&first_inode) && open.contains(&second_inode), "{open:?}");
        assert!(!open.contains(&unrelated_inode), "our other socket leaked into the child: {open:?}");
    }
}
