//! Attacks on the guarantees in [`crate::pass`]'s module docs.
//!
//! Leaks are counted in `/proc/self/fd` by what each entry points to: every
//! test passes copies of its own anonymous file (its marker), so tests
//! running in parallel threads do not disturb each other's counts.

use super::*;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(30);

/// A connected pair; a read that would hang fails after [`PATIENCE`].
fn pair() -> (Channel, Channel) {
    let (one, other) = UnixStream::pair().unwrap();
    for end in [&one, &other] {
        end.set_read_timeout(Some(PATIENCE)).unwrap();
        end.set_write_timeout(Some(PATIENCE)).unwrap();
    }
    (Channel::from(one), Channel::from(other))
}

/// An anonymous file, and what `/proc/self/fd` shows for a copy of it.
fn marker() -> (File, PathBuf) {
    let file = tempfile::tempfile().unwrap();
    let target = std::fs::read_link(format!("/proc/self/fd/{}", file.as_fd().as_raw_fd())).unwrap();
    (file, target)
}

/// How many descriptors of this process point to `target`.
fn copies_open(target: &PathBuf) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|link| link == target)
        .count()
}

/// Writes what a misbehaving peer would: a frame of `kind` whose first 18
/// bytes (or its whole header, if shorter) carry `fds`, with `announced` in
/// the envelope when `kind` is [`WITH_DESCRIPTORS`].
fn send_raw(channel: &mut Channel, kind: u16, announced: u32, payload: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut bytes = Vec::new();
    let length = if kind == WITH_DESCRIPTORS { ENVELOPE + payload.len() } else { payload.len() };
    bytes.extend_from_slice(&frame::header(kind, length).unwrap());
    if kind == WITH_DESCRIPTORS {
        bytes.extend_from_slice(&announced.to_le_bytes());
        bytes.extend_from_slice(&7u16.to_le_bytes());
    }
    let sent = ancillary::send(channel.as_fd(), &bytes, fds).unwrap();
    channel.stream.write_all(&bytes[sent..]).unwrap();
    channel.stream.write_all(payload).unwrap();
}

fn expect_frame(channel: &mut Channel, kind: u16, payload: &[u8]) -> Vec<OwnedFd> {
    let received = channel.read().unwrap();
    assert_eq!(received.frame, Frame { kind, payload: payload.to_vec() });
    received.fds
}

#[test]
fn a_passed_tcp_connection_keeps_its_unread_bytes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.write_all(b"sent before the pass").unwrap();
    let (accepted, _) = listener.accept().unwrap();

    let (mut sender, mut receiver) = pair();
    sender.write(7, b"its record", &[accepted.as_fd()]).unwrap();
    drop(accepted);
    let mut fds = expect_frame(&mut receiver, 7, b"its record");
    assert_eq!(fds.len(), 1);
    let mut passed = TcpStream::from(fds.pop().unwrap());
    passed.set_read_timeout(Some(PATIENCE)).unwrap();

    let mut unread = [0u8; 20];
    passed.read_exact(&mut unread).unwrap();
    assert_eq!(&unread, b"sent before the pass");
    passed.write_all(b"reply from the receiver").unwrap();
    let mut reply = [0u8; 23];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"reply from the receiver");
    client.write_all(b"and after").unwrap();
    let mut after = [0u8; 9];
    passed.read_exact(&mut after).unwrap();
    assert_eq!(&after, b"and after");

    // The receiver held the only copy: closing it closes the connection.
    drop(passed);
    assert_eq!(client.read(&mut reply).unwrap(), 0);
}

/// Lets this process hold `wanted` descriptors (the default soft limit is
/// often 1024), up to the hard limit.
fn allow_open_files(wanted: libc::rlim_t) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    if limit.rlim_cur < wanted {
        assert!(
            limit.rlim_max >= wanted,
            "this test needs {wanted} open files, the hard limit is {}",
            limit.rlim_max
        );
        limit.rlim_cur = wanted;
        // SAFETY: setrlimit reads the struct we own; raising the soft limit
        // up to the hard one affects nothing but this process's fd limit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    }
}

#[test]
fn a_thousand_descriptors_travel_in_one_frame() {
    allow_open_files(4096);
    let (file, target) = marker();
    let (mut sender, mut receiver) = pair();
    let payload: Vec<u8> = (0..1 << 20).map(|index| index as u8).collect();
    let fds = received_while(
        || sender.write(3, &payload, &vec![file.as_fd(); 1000]).unwrap(),
        || expect_frame(&mut receiver, 3, &payload),
    );
    assert_eq!(fds.len(), 1000);
    for fd in &fds {
        let raw = fd.as_raw_fd();
        assert_eq!(std::fs::read_link(format!("/proc/self/fd/{raw}")).unwrap(), target);
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}")).unwrap();
        let flags = info.lines().find_map(|line| line.strip_prefix("flags:")).unwrap().trim();
        let flags = u32::from_str_radix(flags, 8).unwrap();
        assert_ne!(flags & libc::O_CLOEXEC as u32, 0, "descriptor {raw} is not close-on-exec");
    }
    assert_eq!(copies_open(&target), 1001);
    drop(fds);
    assert_eq!(copies_open(&target), 1);

    sender.write(4, b"next", &[]).unwrap();
    assert!(expect_frame(&mut receiver, 4, b"next").is_empty());
}

/// Runs `write` on another thread (a large frame fills the socket buffer)
/// while `read` runs here.
fn received_while<T>(write: impl FnOnce() + Send, read: impl FnOnce() -> T) -> T {
    std::thread::scope(|scope| {
        let writer = scope.spawn(write);
        let received = read();
        writer.join().unwrap();
        received
    })
}

const CHILD: &str = "HOTSWAP_PASS_TEST_CHILD";

/// The test binary runs itself again as the receiving process.
#[test]
fn a_connection_crosses_a_process_boundary() {
    if std::env::var_os(CHILD).is_some() {
        return serve_the_passed_connection();
    }
    let (control, child_end) = UnixStream::pair().unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "pass::tests::a_connection_crosses_a_process_boundary", "--nocapture"])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = crate::listen::spawn_with(&mut command, &[("control", child_end.as_fd())]).unwrap();
    drop(child_end);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.write_all(b"hello from before the pass").unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let mut control = Channel::from(control);
    control.write(9, b"connection 1", &[accepted.as_fd()]).unwrap();
    drop(accepted);

    let mut reply = String::new();
    let read = client.read_to_string(&mut reply);
    let output = child.wait_with_output().unwrap();
    let log = format!(
        "child {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    read.unwrap_or_else(|err| panic!("{err}\n{log}"));
    assert!(output.status.success(), "{log}");
    let expected = "hello from before the pass";
    let (pid, echoed) = reply.split_once(": ").unwrap_or_else(|| panic!("reply {reply:?}\n{log}"));
    assert_eq!(echoed, expected);
    assert_ne!(pid, std::process::id().to_string(), "the reply came from this process");
}

fn serve_the_passed_connection() {
    let mut inherited = crate::listen::take().unwrap();
    assert_eq!(inherited.len(), 1);
    let mut control = Channel::from(UnixStream::from(inherited.pop().unwrap().fd));
    control.get_ref().set_read_timeout(Some(PATIENCE)).unwrap();
    let mut fds = expect_frame(&mut control, 9, b"connection 1");
    assert_eq!(fds.len(), 1);
    let mut passed = TcpStream::from(fds.pop().unwrap());
    passed.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut unread = [0u8; 26];
    passed.read_exact(&mut unread).unwrap();
    passed.write_all(format!("{}: ", std::process::id()).as_bytes()).unwrap();
    passed.write_all(&unread).unwrap();
}

/// Reads a frame that must be refused, and checks that every descriptor it
/// brought (copies of `target`, one kept by the test) was closed.
fn refused(receiver: &mut Channel, target: &PathBuf) -> FrameError {
    let error = receiver.read().unwrap_err();
    assert_eq!(copies_open(target), 1, "a descriptor of a refused frame stayed open ({error})");
    error
}

/// The frame after a refused one reads: the refused one was read whole.
fn next_frame_reads(sender: &mut Channel, receiver: &mut Channel) {
    sender.write(2, b"next", &[]).unwrap();
    assert!(expect_frame(receiver, 2, b"next").is_empty());
}

#[test]
fn fewer_descriptors_than_announced_are_refused_and_closed() {
    let (file, target) = marker();
    let (mut sender, mut receiver) = pair();
    send_raw(&mut sender, WITH_DESCRIPTORS, 3, b"record", &[file.as_fd(), file.as_fd()]);
    let error = refused(&mut receiver, &target);
    assert!(matches!(error, FrameError::Descriptors { announced: 3, received: 2 }), "{error}");
    assert!(error.to_string().contains("announced 3 file descriptors but 2 arrived"), "{error}");
    next_frame_reads(&mut sender, &mut receiver);
}

#[test]
fn an_unannounced_descriptor_is_refused_and_closed() {
    let (file, target) = marker();
    let (mut sender, mut receiver) = pair();
    // A plain frame (announcing none) with one; an envelope announcing 1 with 2.
    send_raw(&mut sender, 5, 0, b"plain", &[file.as_fd()]);
    send_raw(&mut sender, WITH_DESCRIPTORS, 1, b"record", &[file.as_fd(), file.as_fd()]);
    for (announced, received) in [(0, 1), (1, 2)] {
        let error = refused(&mut receiver, &target);
        assert!(
            matches!(error, FrameError::Descriptors { announced: a, received: r } if (a, r) == (announced, received)),
            "{error}"
        );
    }
    next_frame_reads(&mut sender, &mut receiver);
}

#[test]
fn descriptors_the_kernel_truncated_are_refused_and_closed() {
    let (file, target) = marker();
    let (mut sender, receiver) = pair();
    // Room for one descriptor (two, once the buffer is rounded up for alignment).
    let mut receiver = Channel::with_room_for(receiver.into_inner(), 1);
    sender.write(4, b"three", &[file.as_fd(), file.as_fd(), file.as_fd()]).unwrap();
    let error = refused(&mut receiver, &target);
    assert!(matches!(error, FrameError::DescriptorsTruncated { received: 1 | 2 }), "{error}");
    assert!(error.to_string().contains("ulimit -n"), "{error}");
    next_frame_reads(&mut sender, &mut receiver);
}

#[test]
fn an_announcement_over_the_limit_is_refused() {
    let (file, target) = marker();
    let (mut sender, mut receiver) = pair();
    send_raw(&mut sender, WITH_DESCRIPTORS, MAX_DESCRIPTORS as u32 + 1, b"", &[file.as_fd()]);
    let error = refused(&mut receiver, &target);
    assert!(matches!(error, FrameError::TooManyDescriptors { announced: 4097, max: 4096 }), "{error}");

    // An envelope too short for its count and kind.
    sender.stream.write_all(&frame::header(WITH_DESCRIPTORS, 3).unwrap()).unwrap();
    let error = receiver.read().unwrap_err();
    assert!(error.to_string().contains("has 3 bytes, fewer than the 6 of its count and kind"), "{error}");
}

#[test]
fn the_peer_closing_mid_frame_is_a_clear_error() {
    let (sender, mut receiver) = pair();
    drop(sender);
    assert!(matches!(receiver.read(), Err(FrameError::Closed)));

    let (mut sender, mut receiver) = pair();
    sender.stream.write_all(&frame::header(1, 4).unwrap()[..5]).unwrap();
    drop(sender);
    let error = receiver.read().unwrap_err();
    assert!(matches!(&error, FrameError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof), "{error}");
    assert!(
        error.to_string().contains("in the middle of a frame: 5 of the 12 bytes of its header"),
        "{error}"
    );

    let (file, target) = marker();
    let (mut sender, mut receiver) = pair();
    let mut bytes = frame::header(WITH_DESCRIPTORS, ENVELOPE + 100).unwrap().to_vec();
    bytes.extend_from_slice(&2u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&[0; 10]);
    let sent = ancillary::send(sender.as_fd(), &bytes, &[file.as_fd(), file.as_fd()]).unwrap();
    sender.stream.write_all(&bytes[sent..]).unwrap();
    drop(sender);
    let error = refused(&mut receiver, &target);
    assert!(error.to_string().contains("10 of the 100 bytes of its payload"), "{error}");
}

#[test]
fn plain_frames_cross_between_channel_and_frame() {
    let (sender, mut receiver) = pair();
    let mut sender = sender.into_inner();
    let large: Vec<u8> = (0..300_000).map(|index| (index % 251) as u8).collect();
    received_while(
        || frame::write(&mut sender, 1, &large).unwrap(),
        || {
            assert!(expect_frame(&mut receiver, 1, &large).is_empty());
        },
    );
    frame::write(&mut sender, 2, b"").unwrap();
    assert!(expect_frame(&mut receiver, 2, b"").is_empty());

    let mut back = receiver.into_inner();
    let mut channel = Channel::from(sender);
    channel.write(3, b"without descriptors", &[]).unwrap();
    assert_eq!(frame::read(&mut back).unwrap(), Frame { kind: 3, payload: b"without descriptors".to_vec() });
}

#[test]
fn a_read_timeout_still_ends_a_read() {
    let (file, _) = marker();
    let (mut sender, mut receiver) = pair();
    receiver.get_ref().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let error = receiver.read().unwrap_err();
    assert!(
        matches!(&error, FrameError::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)),
        "{error}"
    );
    receiver.get_ref().set_read_timeout(Some(PATIENCE)).unwrap();
    sender.write(6, b"late", &[file.as_fd()]).unwrap();
    assert_eq!(expect_frame(&mut receiver, 6, b"late").len(), 1);
}

#[test]
fn what_write_refuses_sends_nothing() {
    let (file, _) = marker();
    let (mut sender, mut receiver) = pair();
    let error = sender.write(WITH_DESCRIPTORS, b"x", &[file.as_fd()]).unwrap_err();
    assert!(error.to_string().contains("reserved"), "{error}");
    let error = sender.write(WITH_DESCRIPTORS, b"x", &[]).unwrap_err();
    assert!(error.to_string().contains("reserved"), "{error}");
    let error = sender.write(1, b"x", &vec![file.as_fd(); MAX_DESCRIPTORS + 1]).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(
        error.to_string().contains("4097 file descriptors in one frame, more than the limit of 4096"),
        "{error}"
    );
    next_frame_reads(&mut sender, &mut receiver);
}
