//! A [`ModuleSnapshot`] as bytes, for a host that keeps state outside the
//! process: in a file, or handed to the next process in an upgrade.
//!
//! The frame is written by hand rather than with a serde format: states can
//! be many megabytes, and a length-prefixed byte copy is both the fastest
//! encoding and a few lines to read back with every length bounds-checked.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{ModuleSnapshot, SavedTimer};

/// The start of a snapshot without timers.
const MAGIC: &[u8; 8] = b"HSSTATE\x01";
/// The same, followed by the pending timers.
const MAGIC_TIMERS: &[u8; 8] = b"HSSTATE\x02";
/// Both, without their format byte.
const MAGIC_PREFIX: &[u8] = b"HSSTATE";

/// Why [`ModuleSnapshot::from_bytes`] refused its bytes. Nothing is read from
/// bytes that are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotBytesError {
    /// The bytes do not start with `HSSTATE`.
    #[error(
        "not a hotswap state (it does not start with \"HSSTATE\\x01\" or \"HSSTATE\\x02\"); \
         it may be cut short or come from elsewhere"
    )]
    NotASnapshot,
    /// A format this release does not know, written by a newer one.
    #[error(
        "written in state format {format}, which this release cannot read (it reads formats 1 and 2); \
         read it with the release that wrote it or a newer one"
    )]
    UnknownFormat { format: u8 },
    /// A field is longer than what is left: the bytes were cut short.
    #[error("{field} ({len} bytes) runs past the end ({left} bytes left): the bytes are cut short")]
    CutShort { field: &'static str, len: u64, left: usize },
    /// A name (module, version, instance key, method) is not UTF-8.
    #[error("{field} is not valid UTF-8")]
    NotUtf8 { field: &'static str },
    /// A timer's due time is not a time (nanoseconds of a second past
    /// 999,999,999, or past the largest time the system can hold).
    #[error(
        "a timer of instance '{instance}' has an impossible due time \
         ({seconds} s and {nanos} ns after 1970)"
    )]
    ImpossibleDueTime { instance: String, seconds: u64, nanos: u32 },
    /// Bytes follow the end of the snapshot.
    #[error("{count} unexpected bytes after the end of the snapshot")]
    TrailingBytes { count: usize },
}

impl ModuleSnapshot {
    /// The snapshot as bytes, which [`from_bytes`](Self::from_bytes) reads back.
    ///
    /// ```text
    /// "HSSTATE\x01" or "HSSTATE\x02"
    /// u32 len, module name | u32 len, module version | u64 written (unix ms) | u32 instance count
    /// per instance: u32 len, key | u64 len, state bytes
    /// only in "\x02": u32 timer count, per timer (`ctx.after`, pending):
    ///   u32 len, instance key | u64 due (unix s) | u32 due (ns) | u32 len, method | u64 len, payload
    /// ```
    ///
    /// All numbers are little-endian. A snapshot without timers is written as
    /// `"\x01"`, as before timers existed: bytes written before them read
    /// unchanged, and a release that knows no timers still reads a snapshot
    /// that has none. One with timers is refused by such a release rather
    /// than read without them.
    ///
    /// There is no checksum: a lost or changed byte is found only when it
    /// breaks a length or a name. Where bytes can be damaged (a disk), add
    /// one around them; the daemon's state files end with a SHA-256.
    pub fn to_bytes(&self) -> Vec<u8> {
        let state_bytes: usize = self.instances.iter().map(|(key, state)| key.len() + state.len() + 12).sum();
        let mut out = Vec::with_capacity(64 + self.module.len() + self.version.len() + state_bytes);
        out.extend_from_slice(if self.timers.is_empty() { MAGIC } else { MAGIC_TIMERS });
        put_text(&mut out, &self.module);
        put_text(&mut out, &self.version);
        let written = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        out.extend_from_slice(&written.to_le_bytes());
        out.extend_from_slice(&(self.instances.len() as u32).to_le_bytes());
        for (key, state) in &self.instances {
            put_text(&mut out, key);
            out.extend_from_slice(&(state.len() as u64).to_le_bytes());
            out.extend_from_slice(state);
        }
        if !self.timers.is_empty() {
            out.extend_from_slice(&(self.timers.len() as u32).to_le_bytes());
            for timer in &self.timers {
                put_text(&mut out, &timer.instance);
                // Due times are now plus a delay, never before 1970.
                let due = timer.due.duration_since(UNIX_EPOCH).unwrap_or_default();
                out.extend_from_slice(&due.as_secs().to_le_bytes());
                out.extend_from_slice(&due.subsec_nanos().to_le_bytes());
                put_text(&mut out, &timer.method);
                out.extend_from_slice(&(timer.payload.len() as u64).to_le_bytes());
                out.extend_from_slice(&timer.payload);
            }
        }
        out
    }

    /// Reads what [`to_bytes`](Self::to_bytes) wrote (its doc has the
    /// format), in this release or an older one. Every length is checked
    /// against what is there: any other input is refused with an error
    /// naming what was wrong, never a panic. With no checksum in the format,
    /// bytes changed inside a state are read as they are; check a checksum
    /// first where they can be damaged.
    pub fn from_bytes(bytes: &[u8]) -> Result<ModuleSnapshot, SnapshotBytesError> {
        let (fields, has_timers) =
            match (bytes.strip_prefix(MAGIC.as_slice()), bytes.strip_prefix(MAGIC_TIMERS)) {
                (Some(fields), _) => (fields, false),
                (_, Some(fields)) => (fields, true),
                _ => match bytes.strip_prefix(MAGIC_PREFIX) {
                    Some(&[format, ..]) => return Err(SnapshotBytesError::UnknownFormat { format }),
                    _ => return Err(SnapshotBytesError::NotASnapshot),
                },
            };
        let mut reader = Reader { rest: fields };
        let module = reader.text("the module name")?;
        let version = reader.text("the module version")?;
        let _written = reader.u64("the time it was written")?;
        let count = reader.u32("the instance count")?;
        let mut instances = Vec::with_capacity((count as usize).min(4096));
        for _ in 0..count {
            let key = reader.text("an instance key")?;
            let len = reader.u64("the length of an instance's state")?;
            instances.push((key, reader.take(len, "an instance's state")?.to_vec()));
        }
        let mut timers = Vec::new();
        if has_timers {
            let count = reader.u32("the timer count")?;
            timers.reserve((count as usize).min(4096));
            for _ in 0..count {
                let instance = reader.text("a timer's instance key")?;
                let (seconds, nanos) = (reader.u64("a timer's due time")?, reader.u32("a timer's due time")?);
                // Checked before `Duration::new`, which panics when nanoseconds
                // carry past the largest number of seconds.
                let Some(due) = (nanos < 1_000_000_000)
                    .then(|| UNIX_EPOCH.checked_add(Duration::new(seconds, nanos)))
                    .flatten()
                else {
                    return Err(SnapshotBytesError::ImpossibleDueTime { instance, seconds, nanos });
                };
                let method = reader.text("a timer's method")?;
                let len = reader.u64("the length of a timer's payload")?;
                let payload = reader.take(len, "a timer's payload")?.to_vec();
                timers.push(SavedTimer { instance, due, method, payload });
            }
        }
        if !reader.rest.is_empty() {
            return Err(SnapshotBytesError::TrailingBytes { count: reader.rest.len() });
        }
        Ok(ModuleSnapshot { module, version, instances, timers })
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// The next `len` bytes, which hold `field`.
    fn take(&mut self, len: u64, field: &'static str) -> Result<&'a [u8], SnapshotBytesError> {
        let left = self.rest.len();
        match usize::try_from(len) {
            Ok(len) if len <= left => {
                let (taken, rest) = self.rest.split_at(len);
                self.rest = rest;
                Ok(taken)
            }
            _ => Err(SnapshotBytesError::CutShort { field, len, left }),
        }
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], SnapshotBytesError> {
        let bytes = self.take(N as u64, field)?;
        let mut array = [0; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, SnapshotBytesError> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, SnapshotBytesError> {
        self.array(field).map(u64::from_le_bytes)
    }

    fn text(&mut self, field: &'static str) -> Result<String, SnapshotBytesError> {
        let len = self.u32(field)?;
        String::from_utf8(self.take(u64::from(len), field)?.to_vec())
            .map_err(|_| SnapshotBytesError::NotUtf8 { field })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ModuleSnapshot {
        ModuleSnapshot {
            module: "game".into(),
            version: "1002".into(),
            instances: vec![("".into(), b"{\"hits\":3}".to_vec()), ("room-1".into(), vec![0, 255, 7])],
            timers: Vec::new(),
        }
    }

    fn timer(instance: &str, seconds: u64, nanos: u32, method: &str, payload: &[u8]) -> SavedTimer {
        SavedTimer {
            instance: instance.into(),
            due: UNIX_EPOCH + Duration::new(seconds, nanos),
            method: method.into(),
            payload: payload.to_vec(),
        }
    }

    fn with_timers() -> ModuleSnapshot {
        ModuleSnapshot {
            timers: vec![
                timer("", 1_700_000_000, 999_999_999, "fire", b""),
                timer("room-1", 1_700_000_001, 5, "remind", &[0, 1, 2]),
            ],
            ..sample()
        }
    }

    /// The bytes of `snapshot` made here by hand from the documented format,
    /// as releases before this code wrote them (state files on disk hold
    /// these, followed by a checksum).
    fn by_hand(snapshot: &ModuleSnapshot, written_ms: u64) -> Vec<u8> {
        let text = |out: &mut Vec<u8>, text: &str| {
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        };
        let mut out =
            if snapshot.timers.is_empty() { b"HSSTATE\x01".to_vec() } else { b"HSSTATE\x02".to_vec() };
        text(&mut out, &snapshot.module);
        text(&mut out, &snapshot.version);
        out.extend_from_slice(&written_ms.to_le_bytes());
        out.extend_from_slice(&(snapshot.instances.len() as u32).to_le_bytes());
        for (key, state) in &snapshot.instances {
            text(&mut out, key);
            out.extend_from_slice(&(state.len() as u64).to_le_bytes());
            out.extend_from_slice(state);
        }
        if !snapshot.timers.is_empty() {
            out.extend_from_slice(&(snapshot.timers.len() as u32).to_le_bytes());
            for timer in &snapshot.timers {
                text(&mut out, &timer.instance);
                let due = timer.due.duration_since(UNIX_EPOCH).unwrap();
                out.extend_from_slice(&due.as_secs().to_le_bytes());
                out.extend_from_slice(&due.subsec_nanos().to_le_bytes());
                text(&mut out, &timer.method);
                out.extend_from_slice(&(timer.payload.len() as u64).to_le_bytes());
                out.extend_from_slice(&timer.payload);
            }
        }
        out
    }

    /// Where the written time sits: after the magic and two names.
    fn written_at(snapshot: &ModuleSnapshot) -> std::ops::Range<usize> {
        let start = 8 + 4 + snapshot.module.len() + 4 + snapshot.version.len();
        start..start + 8
    }

    #[test]
    fn the_bytes_are_the_documented_format_and_bytes_written_before_read_unchanged() {
        for snapshot in [sample(), with_timers()] {
            let mut bytes = snapshot.to_bytes();
            let written = u64::from_le_bytes(bytes[written_at(&snapshot)].try_into().unwrap());
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
            assert!(now.abs_diff(written) < 600_000, "written at {written} ms, now is {now} ms");
            bytes[written_at(&snapshot)].copy_from_slice(&1_600_000_000_000u64.to_le_bytes());
            assert_eq!(bytes, by_hand(&snapshot, 1_600_000_000_000), "the format changed");
            assert_eq!(ModuleSnapshot::from_bytes(&by_hand(&snapshot, 7)), Ok(snapshot));
        }
        // A snapshot without timers is written as before timers existed.
        assert_eq!(sample().to_bytes()[..8], *b"HSSTATE\x01");
        assert_eq!(with_timers().to_bytes()[..8], *b"HSSTATE\x02");
    }

    #[test]
    fn every_prefix_is_refused_never_misread() {
        for snapshot in [sample(), with_timers()] {
            let bytes = snapshot.to_bytes();
            assert_eq!(ModuleSnapshot::from_bytes(&bytes).as_ref(), Ok(&snapshot));
            for at in 0..bytes.len() {
                match ModuleSnapshot::from_bytes(&bytes[..at]) {
                    Err(SnapshotBytesError::CutShort { left, .. }) => {
                        assert!(at >= 8 && left < 8 + 3, "{at}")
                    }
                    Err(SnapshotBytesError::NotASnapshot) => assert!(at < 8, "cut at {at}"),
                    other => panic!("cut at {at} of {}: {other:?}", bytes.len()),
                }
            }
        }
        let error = ModuleSnapshot::from_bytes(&sample().to_bytes()[..53]).unwrap_err().to_string();
        assert!(
            error.contains("an instance's state (10 bytes) runs past the end (5 bytes left)")
                && error.contains("cut short"),
            "{error}"
        );
    }

    #[test]
    fn bytes_that_are_not_a_snapshot_are_refused_naming_what_is_wrong() {
        let refused = |bytes: &[u8]| ModuleSnapshot::from_bytes(bytes).unwrap_err();
        assert_eq!(refused(b""), SnapshotBytesError::NotASnapshot);
        assert_eq!(refused(b"PK\x03\x04 a zip file"), SnapshotBytesError::NotASnapshot);
        let mut newer = sample().to_bytes();
        newer[7] = 3;
        assert_eq!(refused(&newer), SnapshotBytesError::UnknownFormat { format: 3 });
        let message = refused(&newer).to_string();
        assert!(message.contains("format 3") && message.contains("formats 1 and 2"), "{message}");

        let mut trailing = with_timers().to_bytes();
        trailing.extend_from_slice(b"xyz");
        assert_eq!(refused(&trailing), SnapshotBytesError::TrailingBytes { count: 3 });

        let mut not_utf8 = sample().to_bytes();
        not_utf8[8 + 4] = 0xff; // the first byte of the module name
        assert_eq!(refused(&not_utf8), SnapshotBytesError::NotUtf8 { field: "the module name" });

        // A length past anything addressable: refused, not an allocation.
        let mut huge = sample().to_bytes();
        let state_len = written_at(&sample()).end + 4 + 4;
        huge[state_len..state_len + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(refused(&huge), SnapshotBytesError::CutShort { len: u64::MAX, .. }));
    }

    #[test]
    fn an_impossible_due_time_is_refused_not_a_panic() {
        let bytes = with_timers().to_bytes();
        // The last timer: due seconds, due nanoseconds, then its method and payload.
        let nanos_at = bytes.len() - (4 + "remind".len() + 8 + 3) - 4;
        for (seconds, nanos) in [(u64::MAX, u32::MAX), (1, 1_000_000_000), (u64::MAX, 0)] {
            let mut bad = bytes.clone();
            bad[nanos_at..nanos_at + 4].copy_from_slice(&nanos.to_le_bytes());
            bad[nanos_at - 8..nanos_at].copy_from_slice(&seconds.to_le_bytes());
            let error = ModuleSnapshot::from_bytes(&bad).unwrap_err();
            assert_eq!(
                error,
                SnapshotBytesError::ImpossibleDueTime { instance: "room-1".into(), seconds, nanos }
            );
            assert!(error.to_string().contains("room-1"), "{error}");
        }
    }

    /// Property-style: every byte of an encoded snapshot set to each of a
    /// few values is read or refused, never a panic, and what is read
    /// writes back to bytes that read the same.
    #[test]
    fn any_one_changed_byte_is_read_or_refused_never_a_panic() {
        for snapshot in [sample(), with_timers()] {
            let bytes = snapshot.to_bytes();
            for at in 0..bytes.len() {
                for value in [0x00, 0x01, 0x7f, 0x80, 0xff, bytes[at] ^ 0x40] {
                    let mut changed = bytes.clone();
                    changed[at] = value;
                    if let Ok(read) = ModuleSnapshot::from_bytes(&changed) {
                        assert_eq!(
                            ModuleSnapshot::from_bytes(&read.to_bytes()),
                            Ok(read),
                            "byte {at} = {value}"
                        );
                    }
                }
            }
        }
    }
}
