//! A session's writer: its task sends the queued pushes in order, stops
//! when its session moves (keeping what it had not written), and ends with
//! a close frame.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, watch};
use tungstenite::Message;

use super::super::wire::WireWriter;
use super::super::{CloseKind, Closing, Outgoing, SessionHandle, close_frame};
use super::CLOSE_WAIT;
use crate::daemon::Daemon;

/// The most queued frames the writer hands the socket in one write.
const WRITE_BATCH: usize = 64;

pub(super) type Writer = WireWriter<OwnedWriteHalf>;

/// A writer its session stopped for a move, with what it had not written.
pub(super) struct ParkedWriter {
    pub(super) writer: Writer,
    /// What it had taken to send and not queued on `writer` yet, in order:
    /// it goes before what still waits in `outgoing`.
    pub(super) taken: VecDeque<Outgoing>,
    pub(super) outgoing: mpsc::Receiver<Outgoing>,
}

/// Sends the queued frames in order, and a pong for the client's latest
/// ping; ends with a close frame. `backlog` goes out first (pushes a
/// paused session had queued). Returns the writer when `pause` stopped
/// it, `None` when the session ended.
///
/// Frames that wait together go out in one write: under broadcast load
/// most of the daemon's time was the kernel's, a send per frame.
pub(super) async fn write(
    daemon: Arc<Daemon>,
    handle: Arc<SessionHandle>,
    mut writer: Writer,
    mut outgoing: mpsc::Receiver<Outgoing>,
    mut pongs: watch::Receiver<Option<Bytes>>,
    mut pause: watch::Receiver<bool>,
    backlog: Vec<Outgoing>,
) -> Option<ParkedWriter> {
    let mut closing = handle.closing.subscribe();
    let mut backlog = VecDeque::from(backlog);
    let mut frames = Vec::with_capacity(WRITE_BATCH);
    let ending: Closing = loop {
        // What a parked writer had not written goes out first.
        let (next, pinged) = match backlog.pop_front() {
            Some(item) => (Some(item), false),
            None => tokio::select! {
                biased;
                ending = closing.wait_for(Option::is_some) => {
                    break ending.ok().and_then(|ending| ending.clone()).unwrap_or(Closing {
                        code: 1000, reason: String::new(), kind: CloseKind::Dropped,
                    });
                }
                // Between two frames: what is queued stays queued, to move.
                Ok(_) = pause.wait_for(|paused| *paused) => {
                    return Some(ParkedWriter { writer, taken: backlog, outgoing });
                }
                // `changed` marks the ping seen: `pinged` says it is due.
                Ok(()) = pongs.changed() => (None, true),
                next = outgoing.recv() => (next, false),
            },
        };
        // A pong goes out before what waits (control frames may come
        // between any two frames), once per ping.
        if (pinged || pongs.has_changed().unwrap_or(false))
            && let Some(payload) = pongs.borrow_and_update().clone()
        {
            frames.push(Message::Pong(payload));
        }
        // The frames that wait now, up to a module's close (sent after them).
        let mut closed_by_module = None;
        let mut count = 0;
        let mut next = next.or_else(|| backlog.pop_front().or_else(|| outgoing.try_recv().ok()));
        while let Some(item) = next.take() {
            match item {
                Outgoing::Frame(message) => {
                    frames.push(message);
                    count += 1;
                }
                Outgoing::Close(reason) => {
                    closed_by_module = Some(reason);
                    break;
                }
            }
            if frames.len() < WRITE_BATCH {
                next = backlog.pop_front().or_else(|| outgoing.try_recv().ok());
            }
        }
        for frame in frames.drain(..) {
            writer.queue(frame);
        }
        // A client that does not read must not keep the close from going
        // out, nor a move from happening: what is not written yet moves.
        let sent = tokio::select! {
            sent = writer.flush() => sent,
            _ = closing.wait_for(Option::is_some) => continue,
            Ok(_) = pause.wait_for(|paused| *paused) => {
                // A module's close taken after these frames, and a backlog
                // longer than one batch, move with the rest.
                if let Some(reason) = closed_by_module {
                    backlog.push_front(Outgoing::Close(reason));
                }
                return Some(ParkedWriter { writer, taken: backlog, outgoing });
            }
        };
        if sent.is_err() {
            handle.close(1006, "", CloseKind::Dropped);
            continue;
        }
        daemon.sockets.messages_out.fetch_add(count, std::sync::atomic::Ordering::Relaxed);
        if let Some(reason) = closed_by_module {
            handle.close(1000, reason, CloseKind::Module);
        }
    };
    if ending.kind != CloseKind::Dropped {
        // What was queued before the close (what a refusing on_join pushed,
        // the acks before a failed message or a hand-over) goes out first,
        // unless the queue is why it closes, or the client closed or broke
        // the protocol.
        if !matches!(ending.kind, CloseKind::TooSlow | CloseKind::Client | CloseKind::Protocol) {
            let queued = async {
                loop {
                    while frames.len() < WRITE_BATCH
                        && let Some(Outgoing::Frame(message)) =
                            backlog.pop_front().or_else(|| outgoing.try_recv().ok())
                    {
                        frames.push(message);
                    }
                    let count = frames.len() as u64;
                    if count == 0 || send_all(&mut writer, &mut frames).await.is_err() {
                        break;
                    }
                    daemon.sockets.messages_out.fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                }
            };
            let _ = tokio::time::timeout(CLOSE_WAIT, queued).await;
        }
        // After the rest of a frame a cancelled send left (never inside it).
        writer.queue_close(close_frame(ending.code, &ending.reason));
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, writer.flush()).await;
    let _ = tokio::time::timeout(CLOSE_WAIT, writer.shutdown()).await;
    None
}

/// Writes `frames` (emptying it) in one flush.
async fn send_all(writer: &mut Writer, frames: &mut Vec<Message>) -> std::io::Result<()> {
    for frame in frames.drain(..) {
        writer.queue(frame);
    }
    writer.flush().await
}
