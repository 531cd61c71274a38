//! Sessions that send continuously and check every frame they get, for
//! the tests of sessions through process upgrades (`session_handover`).
//!
//! Each client keeps up to [`WINDOW`] messages `c{C}-{N}` in flight on one
//! socket and checks, against the `room` module's protocol, that each of
//! them is run exactly once and in order: its `ack SEQ` come strictly
//! increasing, its own broadcast `ID:SEQ:TEXT` comes back once, under its
//! session id, with the text it sent next and the seq of its ack; the
//! room's broadcasts arrive with consecutive seqs (none lost, none twice);
//! and no close frame arrives. A failure is returned, not panicked, so a
//! test reports every client's.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tungstenite::Message;

use crate::Daemon;
use crate::ws_client::{Client, call, connect, joined_id};

/// Messages a client has sent and not yet seen come back.
pub const WINDOW: usize = 4;

/// A client thread ends by itself this long after it started, stopped or not.
const GIVE_UP: Duration = Duration::from_secs(240);

/// A session of room `instance`, as it joined.
pub struct Joined {
    pub client: Client,
    pub number: usize,
    pub id: u64,
    pub instance: String,
}

/// Opens `clients` sessions at `/ws`, client `c` in room `r{c % rooms}`,
/// each having read its own `joined`.
pub fn join(daemon: &Daemon, clients: usize, rooms: usize) -> Vec<Joined> {
    (0..clients)
        .map(|number| {
            let instance = format!("r{}", number % rooms);
            let mut client = connect(daemon, &format!("/ws?instance={instance}"));
            let id = joined_id(&mut client);
            Joined { client, number, id, instance }
        })
        .collect()
}

/// What one client saw, once it stopped and every message it sent came back.
pub struct Seen {
    pub number: usize,
    pub id: u64,
    pub instance: String,
    /// When each of its messages was sent, in order (all were acked).
    pub sent_at: Vec<Instant>,
    /// The highest ack it got (0 if none).
    pub last_ack: u64,
    /// `joined N` / `left N` frames after its own join.
    pub membership: Vec<String>,
    /// The session stays open until the test drops it.
    pub _session: Client,
}

/// A running client thread.
pub type Running = JoinHandle<Result<Seen, String>>;

/// Starts each session sending until `stop`, then collecting what is in flight.
pub fn start(sessions: Vec<Joined>, stop: &Arc<AtomicBool>) -> Vec<Running> {
    sessions
        .into_iter()
        .map(|joined| {
            let stop = stop.clone();
            std::thread::spawn(move || run(joined, &stop))
        })
        .collect()
}

/// Waits for every client; the failures of all of them in one message.
pub fn finish(running: Vec<Running>, daemon: &Daemon) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut failures = Vec::new();
    for client in running {
        match client.join().expect("a client thread panicked") {
            Ok(client) => seen.push(client),
            Err(failure) => failures.push(failure),
        }
    }
    assert!(failures.is_empty(), "{} client(s) failed:\n{}\n{}", failures.len(), failures.join("\n"), {
        let log = daemon.log();
        log[log.len().saturating_sub(4000)..].to_owned()
    });
    seen
}

/// Checks what the rooms of `seen` hold in `daemon`: each room's `seq`
/// is the count of messages its clients saw acked (none lost, none run
/// twice), its `sessions` are the ids the clients joined with, and no
/// session left or joined anew.
pub fn assert_rooms_account_for(daemon: &Daemon, seen: &[Seen]) {
    let mut instances: Vec<&str> = seen.iter().map(|client| client.instance.as_str()).collect();
    instances.sort_unstable();
    instances.dedup();
    for instance in instances {
        let members: Vec<&Seen> = seen.iter().filter(|client| client.instance == instance).collect();
        let acked: usize = members.iter().map(|client| client.sent_at.len()).sum();
        let highest = members.iter().map(|client| client.last_ack).max().unwrap_or(0);
        let seq = call(daemon, "seq", instance);
        assert_eq!(
            seq,
            acked.to_string(),
            "room {instance}: its seq against the messages its clients saw acked"
        );
        assert_eq!(highest.to_string(), seq, "room {instance}: the highest ack against its seq");
        let mut ids: Vec<u64> = members.iter().map(|client| client.id).collect();
        ids.sort_unstable();
        let listed: Vec<u64> = serde_json::from_str(&call(daemon, "sessions", instance)).unwrap();
        assert_eq!(listed, ids, "room {instance}: its sessions against the ids its clients joined with");
        for client in &members {
            for text in &client.membership {
                let known = text.strip_prefix("joined ").and_then(|id| id.parse().ok()).is_some_and(|id| {
                    // Another first join, read after this client's own.
                    ids.contains(&id)
                });
                assert!(
                    known,
                    "client {} (session {}) saw {text:?}: a session left or joined anew",
                    client.number, client.id
                );
            }
        }
    }
}

/// How many messages were sent between `from` and `to` (acked, as all are).
pub fn sent_between(seen: &[Seen], from: Instant, to: Instant) -> usize {
    seen.iter().flat_map(|client| &client.sent_at).filter(|at| (from..=to).contains(at)).count()
}

/// A client's messages in flight and what it checked so far.
struct Flow {
    joined: Joined,
    /// Sent, not yet come back: the text and when it was sent.
    pending: VecDeque<(String, Instant)>,
    /// Acks whose broadcast has not come back yet.
    acks: VecDeque<u64>,
    last_ack: u64,
    last_broadcast: u64,
    sent_at: Vec<Instant>,
    membership: Vec<String>,
}

fn run(joined: Joined, stop: &AtomicBool) -> Result<Seen, String> {
    let started = Instant::now();
    let mut flow = Flow {
        joined,
        pending: VecDeque::new(),
        acks: VecDeque::new(),
        last_ack: 0,
        last_broadcast: 0,
        sent_at: Vec::new(),
        membership: Vec::new(),
    };
    let mut next = 0;
    loop {
        let stopping = stop.load(Ordering::Relaxed) || started.elapsed() > GIVE_UP;
        while !stopping && flow.pending.len() < WINDOW {
            let text = format!("c{}-{next}", flow.joined.number);
            next += 1;
            flow.joined
                .client
                .send(Message::text(text.as_str()))
                .map_err(|err| flow.failed(&format!("sending {text}: {err}")))?;
            flow.pending.push_back((text, Instant::now()));
        }
        if flow.pending.is_empty() {
            break;
        }
        match flow.joined.client.read() {
            Ok(Message::Text(text)) => flow.take(text.as_str())?,
            Ok(Message::Close(frame)) => return Err(flow.failed(&format!("closed by the server: {frame:?}"))),
            Ok(_) => {}
            Err(err) => return Err(flow.failed(&format!("reading: {err}"))),
        }
    }
    let Flow { joined, last_ack, sent_at, membership, .. } = flow;
    Ok(Seen {
        number: joined.number,
        id: joined.id,
        instance: joined.instance,
        sent_at,
        last_ack,
        membership,
        _session: joined.client,
    })
}

impl Flow {
    fn failed(&self, what: &str) -> String {
        format!(
            "client {} (session {} in {}): {what}, after {} messages acked, {} in flight",
            self.joined.number,
            self.joined.id,
            self.joined.instance,
            self.sent_at.len(),
            self.pending.len()
        )
    }

    /// Checks one text frame against what was sent and seen before.
    fn take(&mut self, text: &str) -> Result<(), String> {
        if let Some(seq) = text.strip_prefix("ack ") {
            let seq: u64 = seq.parse().map_err(|_| self.failed(&format!("a malformed ack {text:?}")))?;
            if seq <= self.last_ack {
                return Err(self.failed(&format!("ack {seq} after ack {}: not increasing", self.last_ack)));
            }
            self.last_ack = seq;
            self.acks.push_back(seq);
            return Ok(());
        }
        if text.starts_with("joined ") || text.starts_with("left ") {
            self.membership.push(text.to_owned());
            return Ok(());
        }
        let mut parts = text.splitn(3, ':');
        let (Some(from), Some(seq), Some(message)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(self.failed(&format!("an unexpected frame {text:?}")));
        };
        let (Ok(from), Ok(seq)) = (from.parse::<u64>(), seq.parse::<u64>()) else {
            return Err(self.failed(&format!("a malformed broadcast {text:?}")));
        };
        if seq != self.last_broadcast + 1 {
            return Err(self.failed(&format!(
                "broadcast {text:?} after seq {}: lost, repeated or reordered",
                self.last_broadcast
            )));
        }
        self.last_broadcast = seq;
        let mine = message.starts_with(&format!("c{}-", self.joined.number));
        if from != self.joined.id && !mine {
            return Ok(());
        }
        let expected = self.pending.front().map(|(text, _)| text.clone());
        let ack = self.acks.front().copied();
        if from != self.joined.id || expected.as_deref() != Some(message) || ack != Some(seq) {
            return Err(self.failed(&format!(
                "its own broadcast {text:?}, expected {:?} as session {} with the seq of ack {ack:?}",
                expected, self.joined.id
            )));
        }
        let (_, sent) = self.pending.pop_front().expect("checked above");
        self.acks.pop_front();
        self.sent_at.push(sent);
        Ok(())
    }
}

/// Every one of `clients` sessions is open in the serving process, and none
/// was closed there.
pub fn assert_all_open_none_closed(daemon: &Daemon, clients: usize) {
    let status = daemon.status()["sessions"].clone();
    assert_eq!(
        (&status["open"], &status["closes"]),
        (&clients.into(), &serde_json::json!({})),
        "every session open in the last process, none closed: {status}"
    );
}
