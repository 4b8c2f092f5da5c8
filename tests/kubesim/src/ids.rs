//! Random identifiers: object `uid`s, `generateName` suffixes and bearer tokens, from the
//! operating system's generator through ring (already in the tree for TLS).

use ring::rand::{SecureRandom, SystemRandom};

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The system generator only fails when the OS has no entropy source at all; a counter-based
    // fallback keeps identifiers unique even then.
    if SystemRandom::new().fill(&mut buf).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static FALLBACK: AtomicU64 = AtomicU64::new(1);
        let n = FALLBACK.fetch_add(1, Ordering::Relaxed).to_le_bytes();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = n[i % 8] ^ (i as u8).wrapping_mul(31);
        }
    }
    buf
}

/// A version-4 UUID in its canonical text form, as `metadata.uid` carries.
pub fn new_uid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The five-character suffix the real server appends to `generateName`; it uses consonants and
/// digits without vowels so generated names never spell words.
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    random_bytes::<5>()
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// A bearer token: 32 random bytes in hex.
pub fn new_token() -> String {
    random_bytes::<32>()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_look_like_uuid_v4() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(new_uid(), u);
        assert_eq!(name_suffix().len(), 5);
    }
}
