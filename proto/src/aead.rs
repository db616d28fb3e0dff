//! ChaCha20-Poly1305 (RFC 8439) with Noise's nonce layout, behind one small
//! interface with two implementations of the same function:
//!
//! - [`RustCrypto`]: the `chacha20poly1305` crate, portable, `no_std`; what
//!   devices run and the default everywhere;
//! - [`Ring`] (feature `ring`, hosts only): ring's assembly, about 1.7×
//!   faster on x86-64 (BENCHMARKS.md, "Why seal+open misses 1 GB/s"). The
//!   gateway enables it.
//!
//! Both produce the same bytes for the same key, nonce and input, so the
//! two ends of a link may use either (the tests below check it). The
//! [`Aead`] of a build is `Ring` when the feature is on, `RustCrypto` otherwise.

#[cfg(any(not(feature = "ring"), test))]
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
#[cfg(any(not(feature = "ring"), test))]
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};

use crate::noise::TAG_LEN;

/// The backend this build seals and opens with.
#[cfg(not(feature = "ring"))]
pub(crate) type Aead = RustCrypto;
/// The backend this build seals and opens with.
#[cfg(feature = "ring")]
pub(crate) type Aead = Ring;

/// The 96-bit nonce Noise uses: 4 zero bytes, then `n` little-endian.
fn nonce_bytes(n: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_le_bytes());
    b
}

/// Authentication failed (or the input was too long for the cipher).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AeadError;

/// The RustCrypto implementation (with `ring`, only for the tests).
#[cfg(any(not(feature = "ring"), test))]
pub(crate) struct RustCrypto(ChaCha20Poly1305);

#[cfg(any(not(feature = "ring"), test))]
impl RustCrypto {
    /// A cipher under `key`.
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self(ChaCha20Poly1305::new(Key::from_slice(key)))
    }

    /// Encrypts `buf` in place under nonce `n`, returning the tag.
    pub(crate) fn seal(
        &self,
        n: u64,
        ad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        self.0
            .encrypt_in_place_detached(&Nonce::from(nonce_bytes(n)), ad, buf)
            .map(Into::into)
            .map_err(|_| AeadError)
    }

    /// Decrypts `buf` in place under nonce `n` if `tag` authenticates it.
    pub(crate) fn open(
        &self,
        n: u64,
        ad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        self.0
            .decrypt_in_place_detached(&Nonce::from(nonce_bytes(n)), ad, buf, Tag::from_slice(tag))
            .map_err(|_| AeadError)
    }
}

/// ring's implementation (feature `ring`).
///
/// It keeps the 32-byte key and makes ring's key object for each record:
/// that object is sized for ring's largest cipher (an AES-GCM key schedule,
/// about 530 bytes), and a gateway holds two per device session, idle ones
/// included. ChaCha20 has no key schedule: making the object copies the
/// key and looks up the CPU features ring detected once.
#[cfg(feature = "ring")]
pub(crate) struct Ring([u8; 32]);

#[cfg(feature = "ring")]
impl Ring {
    /// A cipher under `key`.
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self(*key)
    }

    fn key(&self) -> ring::aead::LessSafeKey {
        // A 32-byte key is the one length CHACHA20_POLY1305 takes.
        let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &self.0)
            .unwrap_or_else(|_| unreachable!());
        ring::aead::LessSafeKey::new(key)
    }

    /// Encrypts `buf` in place under nonce `n`, returning the tag.
    pub(crate) fn seal(
        &self,
        n: u64,
        ad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        let nonce = ring::aead::Nonce::assume_unique_for_key(nonce_bytes(n));
        let tag = self
            .key()
            .seal_in_place_separate_tag(nonce, ring::aead::Aad::from(ad), buf)
            .map_err(|_| AeadError)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `buf` in place under nonce `n` if `tag` authenticates it.
    pub(crate) fn open(
        &self,
        n: u64,
        ad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        let nonce = ring::aead::Nonce::assume_unique_for_key(nonce_bytes(n));
        let tag = ring::aead::Tag::from(*tag);
        self.key()
            .open_in_place_separate_tag(nonce, ring::aead::Aad::from(ad), tag, buf, 0..)
            .map(|_| ())
            .map_err(|_| AeadError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16 * 1024 + 5;

    fn sample() -> ([u8; 32], [u8; 40], [u8; MAX]) {
        let key = core::array::from_fn(|i| (i * 31 + 7) as u8);
        let ad = core::array::from_fn(|i| (i * 13) as u8);
        let data = core::array::from_fn(|i| (i * 7 + i / 251) as u8);
        (key, ad, data)
    }

    #[test]
    fn tampering_fails_to_open() {
        let (key, ad, data) = sample();
        let data = &data[..100];
        let a = Aead::new(&key);
        let mut buf = [0u8; 100];
        buf.copy_from_slice(data);
        let tag = a.seal(3, &ad, &mut buf).unwrap();
        let mut bad = buf;
        bad[10] ^= 1;
        assert_eq!(a.open(3, &ad, &mut bad, &tag), Err(AeadError));
        let mut wrong_nonce = buf;
        assert_eq!(a.open(4, &ad, &mut wrong_nonce, &tag), Err(AeadError));
        a.open(3, &ad, &mut buf, &tag).unwrap();
        assert_eq!(&buf[..], data);
    }

    /// Records sealed by either backend open with the other, and both make
    /// the same bytes: the two ends of a link may use different ones.
    #[cfg(feature = "ring")]
    #[test]
    fn ring_and_rustcrypto_are_wire_compatible() {
        let (key, ad, data) = sample();
        let (rc, ring) = (RustCrypto::new(&key), Ring::new(&key));
        for len in [0, 1, 15, 16, 63, 64, 65, 1000, 16 * 1024, MAX] {
            let data = &data[..len];
            for n in [0, 1, 0x0102_0304_0506_0708, u64::MAX - 1] {
                for ad in [&ad[..], &[][..]] {
                    let (mut a, mut b) = ([0u8; MAX], [0u8; MAX]);
                    let (a, b) = (&mut a[..len], &mut b[..len]);
                    a.copy_from_slice(data);
                    b.copy_from_slice(data);
                    let ta = rc.seal(n, ad, a).unwrap();
                    let tb = ring.seal(n, ad, b).unwrap();
                    assert_eq!((&*a, ta), (&*b, tb), "len {len} nonce {n}");
                    ring.open(n, ad, a, &ta).unwrap();
                    rc.open(n, ad, b, &tb).unwrap();
                    assert_eq!(&*a, data);
                    assert_eq!(&*b, data);
                    // Either rejects the other's record under another nonce.
                    let tc = rc.seal(n, ad, a).unwrap();
                    assert_eq!(ring.open(n ^ 1, ad, a, &tc), Err(AeadError));
                    let td = ring.seal(n, ad, b).unwrap();
                    assert_eq!(rc.open(n ^ 1, ad, b, &td), Err(AeadError));
                }
            }
        }
    }
}
