//! `sendmsg` / `recvmsg` with `SCM_RIGHTS`: the only unsafe code of
//! [`crate::pass`]. std's ancillary-data API is unstable, so this is libc.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The kernel's limit of descriptors in one message (`SCM_MAX_FD`):
/// `sendmsg` refuses more with `EINVAL`.
pub const SCM_MAX_FD: usize = 253;

/// A control-message buffer, aligned for `cmsghdr` (whose alignment is that
/// of `size_t`), with room for `fds` descriptors.
pub(super) fn control_buffer(fds: usize) -> Vec<usize> {
    let bytes = space_for(fds);
    vec![0; bytes.div_ceil(size_of::<usize>())]
}

fn space_for(fds: usize) -> usize {
    let data = u32::try_from(fds * size_of::<RawFd>()).expect("at most SCM_MAX_FD descriptors");
    // SAFETY: CMSG_SPACE computes a size from its argument; it reads no memory.
    unsafe { libc::CMSG_SPACE(data) as usize }
}

/// Sends `bytes` (not empty) with `fds` attached (at most [`SCM_MAX_FD`]).
/// Returns how many bytes went out, at least one; the descriptors went with
/// the first of them. Never raises SIGPIPE.
pub(super) fn send(socket: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    assert!(!bytes.is_empty(), "descriptors travel with at least one byte");
    assert!(fds.len() <= SCM_MAX_FD, "{} descriptors in one message", fds.len());
    let mut control = control_buffer(fds.len());
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    // SAFETY: msghdr is a plain C struct for which all zeroes is a valid
    // value (null pointers, zero lengths). `iov` points into `bytes` and the
    // control pointer into `control`, both alive and of the lengths given
    // until sendmsg returns; sendmsg only reads them. The one control message
    // is written inside `control`: CMSG_FIRSTHDR of a buffer of
    // CMSG_SPACE(len) bytes is non-null and CMSG_DATA has room for `len`
    // bytes, written unaligned. The descriptors are valid for the call (the
    // caller lends them), and the kernel duplicates them into the message.
    let sent = unsafe {
        let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        if !raw.is_empty() {
            let data = raw.len() * size_of::<RawFd>();
            message.msg_control = control.as_mut_ptr().cast();
            message.msg_controllen = space_for(raw.len()) as _;
            let header = libc::CMSG_FIRSTHDR(&message);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(data as u32) as _;
            std::ptr::copy_nonoverlapping(raw.as_ptr().cast::<u8>(), libc::CMSG_DATA(header), data);
        }
        loop {
            let sent = libc::sendmsg(socket.as_raw_fd(), &message, libc::MSG_NOSIGNAL);
            if sent >= 0 {
                break sent as usize;
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    };
    if sent == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(sent)
}

/// What one `recvmsg` gave.
#[derive(Debug)]
pub(super) struct Arrived {
    /// Bytes read into the buffer; 0 means the peer closed the socket.
    pub bytes: usize,
    /// The kernel set `MSG_CTRUNC`: some descriptors did not arrive.
    pub truncated: bool,
}

/// Reads into `buffer` (not empty) with `recvmsg`, pushing every descriptor
/// that came along onto `fds` (close-on-exec, owned: dropping closes it).
/// `control` is a [`control_buffer`]; how many descriptors fit it bounds how
/// many one call can take before the kernel truncates.
pub(super) fn receive(
    socket: BorrowedFd<'_>,
    buffer: &mut [u8],
    control: &mut [usize],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<Arrived> {
    assert!(!buffer.is_empty(), "a read of nothing would look like a close");
    // SAFETY: msghdr is a plain C struct for which all zeroes is valid.
    // `iov` points into `buffer` and the control pointer into `control`,
    // both alive, writable and of the lengths given until recvmsg returns.
    // Afterwards the kernel has set msg_controllen to the bytes it wrote, and
    // CMSG_FIRSTHDR / CMSG_NXTHDR walk only whole headers inside that range.
    // An SCM_RIGHTS message holds (cmsg_len - CMSG_LEN(0)) / 4 descriptors,
    // read unaligned; each is new in this process's table (MSG_CMSG_CLOEXEC
    // marked it close-on-exec) and owned by nothing else, so OwnedFd may
    // take it.
    unsafe {
        let mut iov = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: buffer.len() };
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = std::mem::size_of_val(control) as _;
        let bytes = loop {
            let read = libc::recvmsg(socket.as_raw_fd(), &mut message, libc::MSG_CMSG_CLOEXEC);
            if read >= 0 {
                break read as usize;
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        };
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = ((*header).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                let first = libc::CMSG_DATA(header).cast::<RawFd>();
                for index in 0..data / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(first.add(index).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
        Ok(Arrived { bytes, truncated: message.msg_flags & libc::MSG_CTRUNC != 0 })
    }
}
