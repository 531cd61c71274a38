//! Keep-alive connections the server closed (issue 10 asks for none under
//! upgrades): an answer that said the connection closes after it
//! (`Connection: close`, or a body running to the end of the stream), or the
//! connection ending (EOF, reset) before the answer began or in its middle.
//!
//! Only keep-alive clients count: a connection-per-request client closes its
//! own connection, and a client that times out gives up on its connection
//! itself. A close is "in an upgrade" from [`HALF_WINDOW_S`] before the
//! upgrade's trigger to [`HALF_WINDOW_S`] after its answer (the old process
//! may close connections until it has handed everything over, nginx's old
//! workers until the old master is gone), else "steady".

use std::io::ErrorKind;

use hotswap_test_support::http::{ExchangeError, Stage};

use crate::load::ClientResult;
use crate::plan::Event;
use crate::report::HALF_WINDOW_S;

/// How the server closed a keep-alive connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The answer said the connection closes after it.
    Said,
    /// The connection ended before any byte of the answer.
    BetweenRequests,
    /// The connection ended in the middle of the answer.
    MidAnswer,
}

pub const KINDS: [Closed; 3] = [Closed::Said, Closed::BetweenRequests, Closed::MidAnswer];

impl Closed {
    /// Whether a failed exchange means the server ended the connection, and
    /// where: a reset or an end of stream is the server's doing; a timeout or
    /// an answer that is not HTTP is not a close.
    pub fn of_error(err: &ExchangeError) -> Option<Closed> {
        match err.kind() {
            ErrorKind::ConnectionReset
            | ErrorKind::BrokenPipe
            | ErrorKind::ConnectionAborted
            | ErrorKind::UnexpectedEof => Some(match err.stage {
                Stage::WritingRequest | Stage::BeforeStatusLine => Closed::BetweenRequests,
                Stage::InStatusLine | Stage::InHeaders | Stage::InBody => Closed::MidAnswer,
            }),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Closed::Said => "said close",
            Closed::BetweenRequests => "ended between requests",
            Closed::MidAnswer => "ended mid-answer",
        }
    }
}

/// One keep-alive connection the server closed: when (µs since the start)
/// and how.
#[derive(Clone, Copy, Debug)]
pub struct ServerClose {
    pub t_us: u32,
    pub how: Closed,
}

/// Counts per [`Closed`] kind (in [`KINDS`] order).
#[derive(Clone, Copy, Debug, Default)]
pub struct PerKind([u64; 3]);

impl PerKind {
    pub fn add(&mut self, how: Closed) {
        self.0[how.index()] += 1;
    }

    pub fn get(&self, how: Closed) -> u64 {
        self.0[how.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    fn describe(&self) -> String {
        let each: Vec<String> =
            KINDS.iter().map(|&how| format!("{} {}", self.get(how), how.name())).collect();
        format!("{} ({})", self.total(), each.join(", "))
    }
}

/// The closes of a run, inside the upgrade windows and elsewhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct CloseCounts {
    pub upgrade: PerKind,
    pub steady: PerKind,
}

/// Sorts every client's closes into the upgrade windows of `upgrades` or
/// the steady rest.
pub fn count(results: &[ClientResult], upgrades: &[&Event]) -> CloseCounts {
    let mut counts = CloseCounts::default();
    for close in results.iter().flat_map(|r| &r.server_closes) {
        let t_s = f64::from(close.t_us) / 1e6;
        let in_upgrade = upgrades
            .iter()
            .any(|e| t_s >= e.start_s - HALF_WINDOW_S && t_s <= e.end_s.max(e.start_s) + HALF_WINDOW_S);
        if in_upgrade { &mut counts.upgrade } else { &mut counts.steady }.add(close.how);
    }
    counts
}

/// The report's line: the counts, and the upgrades' per keep-alive client and
/// upgrade (an upgrade that closes every keep-alive connection once is 1.00).
pub fn line(counts: &CloseCounts, keepalive: usize, upgrades: usize) -> String {
    let per = counts.upgrade.total() as f64 / (keepalive * upgrades).max(1) as f64;
    format!(
        "keep-alive connections the server closed: in upgrades (from {HALF_WINDOW_S} s before the trigger to {HALF_WINDOW_S} s after the answer) {} = {per:.2} per keep-alive client per upgrade; steady {}",
        counts.upgrade.describe(),
        counts.steady.describe()
    )
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn failed(kind: ErrorKind, stage: Stage) -> Option<Closed> {
        Closed::of_error(&ExchangeError { error: io::Error::from(kind), stage })
    }

    #[test]
    fn where_the_connection_ended_says_how_it_was_closed() {
        assert_eq!(failed(ErrorKind::BrokenPipe, Stage::WritingRequest), Some(Closed::BetweenRequests));
        assert_eq!(failed(ErrorKind::UnexpectedEof, Stage::BeforeStatusLine), Some(Closed::BetweenRequests));
        assert_eq!(
            failed(ErrorKind::ConnectionReset, Stage::BeforeStatusLine),
            Some(Closed::BetweenRequests)
        );
        assert_eq!(failed(ErrorKind::UnexpectedEof, Stage::InHeaders), Some(Closed::MidAnswer));
        assert_eq!(failed(ErrorKind::ConnectionReset, Stage::InBody), Some(Closed::MidAnswer));
    }

    #[test]
    fn a_client_that_gives_up_or_a_garbled_answer_is_no_close() {
        assert_eq!(failed(ErrorKind::WouldBlock, Stage::BeforeStatusLine), None);
        assert_eq!(failed(ErrorKind::TimedOut, Stage::InBody), None);
        assert_eq!(failed(ErrorKind::Other, Stage::InStatusLine), None);
    }

    #[test]
    fn closes_are_split_by_the_upgrade_windows() {
        let upgrade = Event { start_s: 4.0, end_s: 4.2, kind: "upgrade".into(), ..Event::default() };
        let at = |t_s: f64, how| ServerClose { t_us: (t_s * 1e6) as u32, how };
        let result = ClientResult {
            server_closes: vec![
                at(3.4, Closed::Said),            // before the window
                at(3.6, Closed::Said),            // 0.4 s before the trigger
                at(4.1, Closed::BetweenRequests), // while it runs
                at(4.6, Closed::MidAnswer),       // 0.4 s after the answer
                at(4.8, Closed::MidAnswer),       // after the window
            ],
            ..ClientResult::default()
        };
        let counts = count(&[result], &[&upgrade]);
        let each = |kinds: PerKind| KINDS.map(|how| kinds.get(how));
        assert_eq!(each(counts.upgrade), [1, 1, 1]);
        assert_eq!(each(counts.steady), [1, 0, 1]);
        assert!(
            line(&counts, 3, 1)
                .contains("3 (1 said close, 1 ended between requests, 1 ended mid-answer) = 1.00 per")
        );
    }
}
