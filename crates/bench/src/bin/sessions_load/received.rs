//! What one session saw, and the checks on every text frame it got: its own
//! acks (`ack N`, timed against its sends, in order) and its room's
//! broadcasts (`SESSION:N:CLIENT:SEQ`), whose SEQ it checks per sender.
//!
//! A client numbers its messages `CLIENT:SEQ` from 1 over the whole run,
//! across reconnects, so every message has one name. A closed session that
//! reconnects (the `upgrades` part) starts a new sequence of
//! checks on the new connection: its messages still waiting for an ack at
//! the close are set aside as unanswered (`unacked_at_close`), and the first
//! broadcast it hears from each sender after rejoining sets where that
//! sender's sequence goes on (what it skipped was sent while it was away:
//! `missed_while_away`, not a loss). A SEQ at or below one already heard is
//! a repeat or a reorder, across reconnects too.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

/// A close the session saw: when (seconds from the load's start) and the
/// close frame's code (`None`: the connection ended or broke without one).
#[derive(Debug, Clone)]
pub struct Close {
    pub at_s: f64,
    pub code: Option<u16>,
}

/// SEQs `first..=last` of `sender`, skipped when a later one came first.
#[derive(Debug, Clone)]
pub struct Gap {
    pub sender: usize,
    pub first: u64,
    pub last: u64,
}

/// What one session saw. Times are seconds from the load's start.
#[derive(Debug, Default)]
pub struct SessionResult {
    pub client: usize,
    pub room: usize,
    pub sent: u64,
    pub acks: u64,
    /// Acks whose room number was not above the previous ack's.
    pub acks_out_of_order: u64,
    /// Acks past the number of messages sent.
    pub acks_extra: u64,
    /// (send time, round trip ms) per acknowledged message.
    pub round_trips: Vec<(f64, f64)>,
    /// Per sender client: the next SEQ expected from it.
    pub next_from: HashMap<usize, u64>,
    /// Broadcasts whose SEQ was below the next expected (a repeat or a reorder).
    pub repeated_or_reordered: u64,
    /// SEQs skipped over on one connection when a later one came first.
    pub gaps: Vec<Gap>,
    /// Every close frame or dropped connection the session saw.
    pub closes: Vec<Close>,
    /// Times it joined its room again after a close.
    pub reconnects: u64,
    /// Attempts to join again that failed (and were tried again).
    pub rejoins_refused: u64,
    /// Per rejoin: ms from the close until it had joined again.
    pub away_ms: Vec<f64>,
    /// SEQs of its messages still waiting for their ack when it was closed.
    pub unacked_at_close: Vec<u64>,
    /// Broadcasts skipped between a close and the first one heard from
    /// that sender after rejoining.
    pub missed_while_away: u64,
    /// `Some(why)` if the session ended before the clients stopped.
    pub closed_early: Option<String>,
    /// Seconds from the stop until every ack was back (None: not within the drain).
    pub drained_after_s: Option<f64>,
    /// `Some(why)` if it could not join.
    pub join_failed: Option<String>,
    /// Senders heard since the last rejoin (only read once it rejoined).
    heard_since_rejoin: HashSet<usize>,
}

/// One message sent: its SEQ and when.
pub type InFlight = VecDeque<(u64, Instant)>;

impl SessionResult {
    pub fn new(client: usize, room: usize) -> SessionResult {
        SessionResult { client, room, ..SessionResult::default() }
    }

    /// The connection ended at `at_s` (`code` from its close frame, if
    /// any): the messages waiting for an ack are unanswered.
    pub fn closed(&mut self, at_s: f64, code: Option<u16>, in_flight: &mut InFlight) {
        self.unacked_at_close.extend(in_flight.drain(..).map(|(seq, _)| seq));
        self.closes.push(Close { at_s, code });
    }

    /// It joined its room again, `away` after the close: the checks of its
    /// room's broadcasts start over.
    pub fn rejoined(&mut self, away: std::time::Duration) {
        self.reconnects += 1;
        self.away_ms.push(away.as_secs_f64() * 1e3);
        self.heard_since_rejoin.clear();
    }

    /// Checks one text frame: an ack of the oldest message in flight, or a
    /// broadcast (`joined N` and `left N` are neither).
    pub fn on_text(&mut self, text: &str, start: Instant, in_flight: &mut InFlight, last_ack: &mut u64) {
        if let Some(number) = text.strip_prefix("ack ") {
            let number: u64 = number.parse().unwrap_or(0);
            if number <= *last_ack {
                self.acks_out_of_order += 1;
            }
            *last_ack = number;
            match in_flight.pop_front() {
                Some((_, sent)) => {
                    self.acks += 1;
                    let rtt = sent.elapsed().as_secs_f64() * 1e3;
                    self.round_trips.push((sent.duration_since(start).as_secs_f64(), rtt));
                }
                None => self.acks_extra += 1,
            }
            return;
        }
        // SESSION:N:CLIENT:SEQ
        let mut parts = text.splitn(4, ':');
        let (Some(_session), Some(_n), Some(sender), Some(seq)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let (Ok(sender), Ok(seq)) = (sender.parse::<usize>(), seq.parse::<u64>()) else { return };
        let first_since_rejoin = self.reconnects > 0 && self.heard_since_rejoin.insert(sender);
        let next = self.next_from.entry(sender).or_insert(1);
        if seq < *next {
            self.repeated_or_reordered += 1;
            return;
        }
        if seq > *next {
            if first_since_rejoin {
                self.missed_while_away += seq - *next;
            } else {
                self.gaps.push(Gap { sender, first: *next, last: seq - 1 });
            }
        }
        *next = seq + 1;
    }
}
