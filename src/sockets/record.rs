//! The byte layout of what a session takes to another process (the read
//! state of `wire/park.rs`, the records of `moving.rs`): u64 numbers,
//! little-endian, and byte strings prefixed with their u64 length.

pub fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The next `count` bytes of `rest`; `Err` says where the bytes end early
/// ("ends in {what}: …"), for the caller to say of what.
pub fn take<'a>(rest: &mut &'a [u8], count: usize, what: &str) -> Result<&'a [u8], String> {
    if rest.len() < count {
        return Err(format!("ends in {what}: {count} bytes were expected, {} are left", rest.len()));
    }
    let (taken, left) = rest.split_at(count);
    *rest = left;
    Ok(taken)
}

pub fn take_u64(rest: &mut &[u8], what: &str) -> Result<u64, String> {
    Ok(u64::from_le_bytes(take(rest, 8, what)?.try_into().expect("eight bytes")))
}

/// A u64 length, then that many bytes.
pub fn take_sized<'a>(rest: &mut &'a [u8], what: &str) -> Result<&'a [u8], String> {
    let length = usize::try_from(take_u64(rest, what)?).unwrap_or(usize::MAX);
    take(rest, length, what)
}
