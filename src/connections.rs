//! The cap on open public connections, and the descriptor budget behind it.
//!
//! Every connection is a file descriptor, and so is every state file a save
//! writes and every admin connection. If the public port may take them all,
//! slow clients starve the admin socket and every save fails with EMFILE.
//! So the public port holds at most `server.max_connections`, shrunk at
//! start to what the process's descriptor limit leaves after the ones it
//! already uses and a reserve; a connection past the cap is accepted and
//! closed at once (and counted), so the kernel's queue does not fill with
//! clients that wait for nothing.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::{Listener, Throttle};

/// Descriptors kept free for everything but public connections: admin
/// connections, state files and their folder, module copies, an upgrade's
/// sockets and pipes.
const RESERVED_DESCRIPTORS: u64 = 64;

/// How often a refusal is logged while refusals go on.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the metrics show about public connections.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub open: AtomicUsize,
    pub max: AtomicUsize,
    pub refused: AtomicU64,
}

/// The cap to apply: `configured`, or less if the descriptor limit (raised
/// to its hard limit if that helps) cannot hold that many beside the
/// descriptors open now and a reserve. Logs what it decided when it shrank.
pub fn fit_to_descriptors(configured: usize) -> Result<usize, String> {
    let open_now = std::fs::read_dir("/proc/self/fd").map(Iterator::count).unwrap_or(0) as u64;
    let wanted = configured as u64 + open_now + RESERVED_DESCRIPTORS;
    let limit = raise_descriptor_limit(wanted);
    let room = limit.saturating_sub(open_now + RESERVED_DESCRIPTORS);
    if room == 0 {
        return Err(format!(
            "the open-file limit ({limit} descriptors) leaves no room for public connections beside the \
             {open_now} open now and {RESERVED_DESCRIPTORS} kept in reserve; raise it (`ulimit -n`, or \
             LimitNOFILE= in the systemd unit)"
        ));
    }
    if room < configured as u64 {
        tracing::warn!(
            "server.max_connections is {configured}, but the open-file limit of {limit} descriptors \
             leaves room for {room} ({open_now} are open, {RESERVED_DESCRIPTORS} kept for the admin \
             socket and state files); serving at most {room} public connections. Raise the limit \
             (LimitNOFILE= in the systemd unit) to allow more"
        );
    }
    Ok(usize::try_from(room).unwrap_or(usize::MAX).min(configured))
}

/// Raises the soft limit on open files towards `wanted` (never above the
/// hard limit, never down) and returns the soft limit in force. systemd
/// gives services a soft limit of 1024 and expects a program that needs
/// more to raise it itself.
fn raise_descriptor_limit(wanted: u64) -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return u64::MAX;
    }
    let (soft, hard) = (limit.rlim_cur, limit.rlim_max);
    if soft >= wanted || soft >= hard {
        return soft;
    }
    let raised = libc::rlimit { rlim_cur: wanted.min(hard), rlim_max: limit.rlim_max };
    // SAFETY: `raised` is a valid rlimit that outlives the call; the soft
    // limit it sets is within the hard limit, so the call cannot fail for that.
    match unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } {
        0 => raised.rlim_cur,
        _ => soft,
    }
}

/// A listener that holds at most `max` connections open at once.
#[derive(Debug)]
pub struct Capped<L> {
    inner: L,
    admission: Admission,
    refusals: Throttle,
}

impl<L> Capped<L> {
    pub fn new(inner: L, max: usize, stats: Arc<ConnectionStats>) -> Capped<L> {
        stats.max.store(max, Relaxed);
        Capped { inner, admission: Admission { max, stats }, refusals: Throttle::new(REFUSAL_LOG_EVERY) }
    }

    /// Admits connections that did not come through `accept_one` (moved
    /// here by an upgrade) against the same cap.
    pub fn admission(&self) -> Admission {
        self.admission.clone()
    }

    fn log_refusal(&self) {
        if let Some(refused) = self.refusals.admit() {
            tracing::warn!(
                "public port: {} open connections reached server.max_connections; closed {refused} new \
                 connection(s) at once (hotswap_public_connections_refused_total)",
                self.admission.max,
            );
        }
    }
}

/// The count of open public connections and its cap.
#[derive(Debug, Clone)]
pub struct Admission {
    max: usize,
    stats: Arc<ConnectionStats>,
}

impl Admission {
    /// `stream` counted among the open connections, or back if the cap is
    /// reached (then counted as refused).
    pub fn admit<S>(&self, stream: S) -> Result<Counted<S>, S> {
        let admitted =
            self.stats.open.fetch_update(Relaxed, Relaxed, |open| (open < self.max).then_some(open + 1));
        if admitted.is_err() {
            self.stats.refused.fetch_add(1, Relaxed);
            return Err(stream);
        }
        Ok(Counted { stream, admitted: Admitted(self.stats.clone()) })
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl<L: Listener> Listener for Capped<L> {
    type Stream = Counted<L::Stream>;

    async fn accept_one(&self) -> io::Result<Self::Stream> {
        loop {
            let stream = self.inner.accept_one().await?;
            match self.admission.admit(stream) {
                Ok(counted) => return Ok(counted),
                // Closed before a byte is read: the client sees the connection end.
                Err(refused) => drop(refused),
            }
            self.log_refusal();
        }
    }
}

/// An admitted connection; it leaves the count when it is dropped.
#[derive(Debug)]
pub struct Counted<S> {
    stream: S,
    admitted: Admitted,
}

/// A place in the count of open connections, given back when dropped.
#[derive(Debug)]
pub struct Admitted(Arc<ConnectionStats>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

impl<S> Counted<S> {
    /// The stream and its place in the count: a WebSocket session takes the
    /// raw stream over and holds the place while it is open.
    pub fn into_parts(self) -> (S, Admitted) {
        (self.stream, self.admitted)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
