//! The hash of the instance map: SipHash-1-3 under a random key, as std's
//! `RandomState` hashes, computed over a key's bytes in one pass.
//!
//! Instance keys are chosen by clients, who could pick keys that collide in
//! a weak or fixed hash and make every lookup walk one long chain (hash
//! flooding). SipHash is a keyed pseudo-random function: without the key,
//! which is drawn at random per map and never leaves the process, an
//! attacker cannot predict which keys collide, so no set of keys is worse
//! than random. std's `RandomState` uses the same function (SipHash-1-3);
//! what costs there is the streaming `Hasher` around it: a `str` arrives as
//! its bytes and then a `0xff` byte, each buffered and padded, about 12 ns
//! for a one-letter key on this project's benchmark machine. Here the bytes
//! go through SipHash in one call and the constant `0xff` is folded into the
//! result (it is the same for every key, so it cannot make two keys collide
//! that SipHash keeps apart).
//!
//! Made for `str` keys, the only keys of the instance map: integers other
//! than that terminator byte are hashed as bytes (`Hasher`'s default), each
//! write chaining a SipHash pass.

use std::hash::{BuildHasher, Hasher};

/// Builds [`InstanceKeyHasher`]s under one random key.
#[derive(Clone)]
pub(crate) struct InstanceKeyHashing {
    key: (u64, u64),
}

impl Default for InstanceKeyHashing {
    /// A new random key, taken from std's `RandomState` (seeded from the
    /// operating system's random source): the two words are its SipHash of
    /// 0 and 1 under its own secret key, so they are as unpredictable as it is.
    fn default() -> Self {
        let seed = std::hash::RandomState::new();
        InstanceKeyHashing { key: (seed.hash_one(0u64), seed.hash_one(1u64)) }
    }
}

impl std::fmt::Debug for InstanceKeyHashing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays secret, in logs too.
        f.write_str("InstanceKeyHashing { .. }")
    }
}

impl BuildHasher for InstanceKeyHashing {
    type Hasher = InstanceKeyHasher;

    #[inline]
    fn build_hasher(&self) -> InstanceKeyHasher {
        InstanceKeyHasher { key: self.key, hash: 0 }
    }
}

/// See the module docs.
pub(crate) struct InstanceKeyHasher {
    key: (u64, u64),
    hash: u64,
}

impl Hasher for InstanceKeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // A second write is keyed with the first one's result, so every
        // write counts; a `str` key has one.
        self.hash = sip_hash::<1, 3>(self.key.0, self.key.1 ^ self.hash, bytes);
    }

    #[inline]
    fn write_u8(&mut self, byte: u8) {
        // The `0xff` terminator of a `str`, the same for every key.
        self.hash ^= u64::from(byte);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// SipHash-c-d of `bytes` under the key `(k0, k1)`, as the SipHash paper
/// (Aumasson and Bernstein, 2012) defines it: the bytes as little-endian
/// 64-bit words, the last one padded with zeros and the length's low byte
/// on top; `C` rounds per word, `D` rounds to finish.
#[inline]
fn sip_hash<const C: usize, const D: usize>(k0: u64, k1: u64, bytes: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let m = u64::from_le_bytes(word.try_into().expect("chunks of 8 bytes"));
        v[3] ^= m;
        for _ in 0..C {
            sip_round(&mut v);
        }
        v[0] ^= m;
    }
    let m = tail_word(words.remainder()) | ((bytes.len() as u64) << 56);
    v[3] ^= m;
    for _ in 0..C {
        sip_round(&mut v);
    }
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..D {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The last 0 to 7 bytes as a little-endian word padded with zeros, read
/// in at most three loads (a `copy_from_slice` of a length only known at
/// run time is a call to `memcpy`).
#[inline(always)]
fn tail_word(rest: &[u8]) -> u64 {
    debug_assert!(rest.len() < 8);
    let mut word = 0;
    let mut at = 0;
    if let Some(four) = rest.first_chunk::<4>() {
        word = u64::from(u32::from_le_bytes(*four));
        at = 4;
    }
    if let Some(two) = rest[at..].first_chunk::<2>() {
        word |= u64::from(u16::from_le_bytes(*two)) << (8 * at);
        at += 2;
    }
    if let Some(&one) = rest.get(at) {
        word |= u64::from(one) << (8 * at);
    }
    word
}

#[inline(always)]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hasher};

    use super::{InstanceKeyHashing, sip_hash};

    /// The test vector of the SipHash paper (appendix A): SipHash-2-4, key
    /// 00 01 .. 0f, message 00 01 .. 0e.
    #[test]
    fn sip_hash_2_4_gives_the_papers_test_vector() {
        let key: Vec<u8> = (0..16).collect();
        let k0 = u64::from_le_bytes(key[..8].try_into().unwrap());
        let k1 = u64::from_le_bytes(key[8..].try_into().unwrap());
        let message: Vec<u8> = (0..15).collect();
        assert_eq!(sip_hash::<2, 4>(k0, k1, &message), 0xa129_ca61_49be_45e5);
    }

    /// The same function as std's (deprecated, but stable) SipHash-2-4 for
    /// every length around the word boundaries, so the rounds, the padding
    /// and the length byte are right; SipHash-1-3 differs only in the counts.
    #[test]
    #[allow(deprecated)]
    fn sip_hash_2_4_matches_std_for_lengths_0_to_40() {
        let bytes: Vec<u8> = (0..40u8).map(|n| n.wrapping_mul(37).wrapping_add(11)).collect();
        for len in 0..=bytes.len() {
            let (k0, k1) = (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210 ^ len as u64);
            let mut std_hasher = std::hash::SipHasher::new_with_keys(k0, k1);
            std_hasher.write(&bytes[..len]);
            assert_eq!(sip_hash::<2, 4>(k0, k1, &bytes[..len]), std_hasher.finish(), "{len} bytes");
        }
    }

    /// Instance keys come from clients, who could pick keys that collide in
    /// a weak or fixed hash. Each map has its own random key, and keys that
    /// differ only in their length or their last byte hash apart.
    #[test]
    fn instance_keys_are_hashed_under_a_random_key_per_map() {
        let (one, other) = (InstanceKeyHashing::default(), InstanceKeyHashing::default());
        assert_ne!(one.hash_one("room-1"), other.hash_one("room-1"), "each map has its own key");
        let hashes: std::collections::HashSet<u64> = ["", "a", "a\0", "b", "room-1", "room-2", "room-1 "]
            .iter()
            .map(|key| one.hash_one(key))
            .collect();
        assert_eq!(hashes.len(), 7);
        assert_eq!(one.hash_one("room-1"), one.hash_one(String::from("room-1").into_boxed_str()));
    }
}
