//! The record ciphers.
//!
//! ChaCha20-Poly1305 (RFC 8439), every implementation's, behind one small
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
//!
//! AES-256-GCM ([`AesGcm`], feature `ring`): the record cipher two hosts
//! with AES instructions negotiate (SPEC.md §3.3, §4.2). With AES-NI and
//! carry-less multiply it costs the gateway about a third of what
//! ChaCha20-Poly1305 does per byte. It runs on ring, or on AWS-LC with
//! feature `aws-lc` (the gateway's): AWS-LC's AES-GCM uses 512-bit vector
//! AES where the CPU has it: two thirds of ring's time for a 16 KiB
//! record on the benchmark machine (BENCHMARKS.md, "AES-GCM on AWS-LC");
//! CPUs without AVX-512 were not measured. Both make the same bytes
//! (tested below; CI also tests ring alone). Devices never offer it: on a Cortex-M33
//! without an AES unit it would be slower than ChaCha20 and not constant
//! time. Both ciphers take the same 32-byte key and the same nonce layout.
//!
//! [`RecordAead`] is the cipher of one direction of a session: the
//! handshake's ChaCha20-Poly1305 unless AES-256-GCM was chosen.

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

/// Seals `buf` in place under `key` and nonce `n` with ring, returning the tag.
#[cfg(feature = "ring")]
fn ring_seal(
    key: &ring::aead::LessSafeKey,
    n: u64,
    ad: &[u8],
    buf: &mut [u8],
) -> Result<[u8; TAG_LEN], AeadError> {
    let nonce = ring::aead::Nonce::assume_unique_for_key(nonce_bytes(n));
    let tag = key
        .seal_in_place_separate_tag(nonce, ring::aead::Aad::from(ad), buf)
        .map_err(|_| AeadError)?;
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens `buf` in place under `key` and nonce `n` with ring if `tag`
/// authenticates it.
#[cfg(feature = "ring")]
fn ring_open(
    key: &ring::aead::LessSafeKey,
    n: u64,
    ad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), AeadError> {
    let nonce = ring::aead::Nonce::assume_unique_for_key(nonce_bytes(n));
    key.open_in_place_separate_tag(
        nonce,
        ring::aead::Aad::from(ad),
        ring::aead::Tag::from(*tag),
        buf,
        0..,
    )
    .map(|_| ())
    .map_err(|_| AeadError)
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
        ring_seal(&self.key(), n, ad, buf)
    }

    /// Decrypts `buf` in place under nonce `n` if `tag` authenticates it.
    pub(crate) fn open(
        &self,
        n: u64,
        ad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        ring_open(&self.key(), n, ad, buf, tag)
    }
}

/// Blocks of 16 bytes one AES-256-GCM key may process, counting each
/// record's blocks plus one: 2^36 keeps the confidentiality advantage of
/// the whole session below 2^-57 (SPEC.md §3.3). At 16 KiB records that is
/// about a terabyte per direction; a session that reaches it ends, and the
/// device reconnects with fresh keys.
#[cfg(feature = "ring")]
pub(crate) const AES_GCM_BLOCK_LIMIT: u64 = 1 << 36;

/// The library AES-256-GCM runs on: AWS-LC with feature `aws-lc`, ring
/// otherwise. The two have the same `aead` interface.
#[cfg(feature = "aws-lc")]
use aws_lc_rs::aead as aes_lib;
#[cfg(all(feature = "ring", not(feature = "aws-lc")))]
use ring::aead as aes_lib;

/// AES-256-GCM (feature `ring`; on AWS-LC with feature `aws-lc`).
///
/// The library's key object holds the AES key schedule and the GHASH table
/// (about 530 bytes with ring); unlike ChaCha20's it costs real work to make. It is made at
/// the first record and kept while the session is busy; [`AesGcm::release`]
/// drops it when the session parks, so an idle session holds 32 bytes of
/// key, as with ChaCha20-Poly1305.
#[cfg(feature = "ring")]
pub(crate) struct AesGcm {
    key: [u8; 32],
    cached: Option<Box<aes_lib::LessSafeKey>>,
    /// Blocks processed so far, toward [`AES_GCM_BLOCK_LIMIT`].
    blocks: u64,
}

#[cfg(feature = "ring")]
impl AesGcm {
    /// A cipher under `key`.
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self {
            key: *key,
            cached: None,
            blocks: 0,
        }
    }

    /// The same with only `left` blocks left before the limit (tests).
    #[cfg(test)]
    pub(crate) fn with_blocks_left(key: &[u8; 32], left: u64) -> Self {
        Self {
            blocks: AES_GCM_BLOCK_LIMIT - left,
            ..Self::new(key)
        }
    }

    /// Counts `len` bytes against the usage limit; an error once spent.
    fn spend(&mut self, len: usize) -> Result<(), AeadError> {
        let blocks = (len as u64).div_ceil(16) + 1;
        match self.blocks.checked_add(blocks) {
            Some(b) if b <= AES_GCM_BLOCK_LIMIT => {
                self.blocks = b;
                Ok(())
            }
            _ => Err(AeadError),
        }
    }

    fn key(&mut self) -> &aes_lib::LessSafeKey {
        let key = &self.key;
        self.cached.get_or_insert_with(|| {
            // A 32-byte key is the one length AES_256_GCM takes.
            let key = aes_lib::UnboundKey::new(&aes_lib::AES_256_GCM, key)
                .unwrap_or_else(|_| unreachable!());
            Box::new(aes_lib::LessSafeKey::new(key))
        })
    }

    /// Encrypts `buf` in place under nonce `n`, returning the tag.
    pub(crate) fn seal(
        &mut self,
        n: u64,
        ad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        self.spend(buf.len())?;
        let nonce = aes_lib::Nonce::assume_unique_for_key(nonce_bytes(n));
        let tag = self
            .key()
            .seal_in_place_separate_tag(nonce, aes_lib::Aad::from(ad), buf)
            .map_err(|_| AeadError)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `buf` in place under nonce `n` if `tag` authenticates it.
    pub(crate) fn open(
        &mut self,
        n: u64,
        ad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        self.spend(buf.len())?;
        let nonce = aes_lib::Nonce::assume_unique_for_key(nonce_bytes(n));
        let ad = aes_lib::Aad::from(ad);
        #[cfg(feature = "aws-lc")]
        let opened = self.key().open_in_place_separate_tag(nonce, ad, tag, buf);
        #[cfg(not(feature = "aws-lc"))]
        let opened =
            self.key()
                .open_in_place_separate_tag(nonce, ad, aes_lib::Tag::from(*tag), buf, 0..);
        opened.map(|_| ()).map_err(|_| AeadError)
    }

    /// Drops the library's key object until the next record.
    pub(crate) fn release(&mut self) {
        self.cached = None;
    }
}

/// The record cipher of one direction of a session.
pub(crate) enum RecordAead {
    /// ChaCha20-Poly1305: the handshake's cipher, and the records' unless
    /// both sides chose another.
    ChaCha(Aead),
    /// AES-256-GCM (hosts only).
    #[cfg(feature = "ring")]
    AesGcm(AesGcm),
}

impl RecordAead {
    /// Encrypts `buf` in place under nonce `n`, returning the tag.
    pub(crate) fn seal(
        &mut self,
        n: u64,
        ad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        match self {
            Self::ChaCha(a) => a.seal(n, ad, buf),
            #[cfg(feature = "ring")]
            Self::AesGcm(a) => a.seal(n, ad, buf),
        }
    }

    /// Decrypts `buf` in place under nonce `n` if `tag` authenticates it.
    pub(crate) fn open(
        &mut self,
        n: u64,
        ad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        match self {
            Self::ChaCha(a) => a.open(n, ad, buf, tag),
            #[cfg(feature = "ring")]
            Self::AesGcm(a) => a.open(n, ad, buf, tag),
        }
    }

    /// Frees what the cipher holds beyond its key (an idle session).
    pub(crate) fn release(&mut self) {
        match self {
            Self::ChaCha(_) => {}
            #[cfg(feature = "ring")]
            Self::AesGcm(a) => a.release(),
        }
    }

    /// The same key under AES-256-GCM; `None` in a build without it or
    /// when already switched.
    pub(crate) fn to_aes_gcm(&self) -> Option<Self> {
        match self {
            #[cfg(feature = "ring")]
            Self::ChaCha(a) => Some(Self::AesGcm(AesGcm::new(&a.0))),
            #[cfg(not(feature = "ring"))]
            Self::ChaCha(_) => None,
            #[cfg(feature = "ring")]
            Self::AesGcm(_) => None,
        }
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

    /// AES-256-GCM against the GCM specification's test cases 13 and 14
    /// (zero key, zero 96-bit IV: nonce 0 in devlink's layout), no AD.
    #[cfg(feature = "ring")]
    #[test]
    fn aes_gcm_known_answers() {
        fn hex(s: &str) -> [u8; 16] {
            core::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        }
        let mut a = RecordAead::ChaCha(Aead::new(&[0; 32]))
            .to_aes_gcm()
            .unwrap();
        assert_eq!(
            a.seal(0, &[], &mut []).unwrap(),
            hex("530f8afbc74536b9a963b4f1c4cb738b")
        );
        let mut block = [0u8; 16];
        let tag = a.seal(0, &[], &mut block).unwrap();
        assert_eq!(block, hex("cea7403d4d606b6e074ec5d3baf39d18"));
        assert_eq!(tag, hex("d0d1c8a799996bf0265b98b5d48ab919"));
        a.open(0, &[], &mut block, &tag).unwrap();
        assert_eq!(block, [0; 16]);
        // Switching twice is refused: the key is already AES's.
        assert!(a.to_aes_gcm().is_none());
    }

    /// AWS-LC's AES-256-GCM (feature `aws-lc`) makes ring's bytes and opens
    /// ring's records: a gateway on either talks to a device on either.
    #[cfg(feature = "aws-lc")]
    #[test]
    fn aws_lc_and_ring_aes_gcm_are_wire_compatible() {
        use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let (key, ad, data) = sample();
        let ring = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
        let mut ours = AesGcm::new(&key);
        for len in [0, 1, 15, 16, 17, 63, 64, 65, 255, 1000, 16 * 1024, MAX] {
            let data = &data[..len];
            for n in [0, 1, 0x0102_0304_0506_0708, u64::MAX - 1] {
                for ad in [&ad[..], &[][..]] {
                    let (mut a, mut b) = ([0u8; MAX], [0u8; MAX]);
                    let (a, b) = (&mut a[..len], &mut b[..len]);
                    a.copy_from_slice(data);
                    b.copy_from_slice(data);
                    let ta = ours.seal(n, ad, a).unwrap();
                    let nonce = || Nonce::assume_unique_for_key(nonce_bytes(n));
                    let tb = ring
                        .seal_in_place_separate_tag(nonce(), Aad::from(ad), b)
                        .unwrap();
                    assert_eq!((&*a, &ta[..]), (&*b, tb.as_ref()), "len {len} nonce {n}");
                    // Each opens the other's record; a flipped bit fails.
                    ring.open_in_place_separate_tag(nonce(), Aad::from(ad), tb, a, 0..)
                        .unwrap();
                    assert_eq!(&*a, data);
                    ours.open(n, ad, b, &ta).unwrap();
                    assert_eq!(&*b, data);
                    let tc = ring
                        .seal_in_place_separate_tag(nonce(), Aad::from(ad), a)
                        .unwrap();
                    if let Some(first) = a.first_mut() {
                        *first ^= 1;
                    }
                    let mut tag = [0u8; TAG_LEN];
                    tag.copy_from_slice(tc.as_ref());
                    if len == 0 {
                        tag[0] ^= 1;
                    }
                    assert_eq!(ours.open(n, ad, a, &tag), Err(AeadError));
                }
            }
        }
    }

    /// A key stops at its block limit, counting each record's blocks plus
    /// one, in both directions; releasing the cached key object changes
    /// nothing about the bytes.
    #[cfg(feature = "ring")]
    #[test]
    fn aes_gcm_usage_limit_and_release() {
        let (key, _, data) = sample();
        // 100 bytes: 7 blocks + 1.
        let mut tx = AesGcm::with_blocks_left(&key, 24);
        let mut rx = AesGcm::with_blocks_left(&key, 24);
        for n in 0..3 {
            let mut buf = [0u8; 100];
            buf.copy_from_slice(&data[..100]);
            let tag = tx.seal(n, &[], &mut buf).unwrap();
            if n == 1 {
                tx.release();
                rx.release();
                assert!(tx.cached.is_none());
            }
            rx.open(n, &[], &mut buf, &tag).unwrap();
            assert_eq!(&buf[..], &data[..100]);
        }
        assert_eq!(tx.seal(3, &[], &mut [0u8; 1]), Err(AeadError));
        assert_eq!(
            rx.open(3, &[], &mut [0u8; 1], &[0; TAG_LEN]),
            Err(AeadError)
        );
        // An empty record still counts one block.
        let mut t = AesGcm::with_blocks_left(&key, 2);
        t.seal(0, &[], &mut []).unwrap();
        t.seal(1, &[], &mut []).unwrap();
        assert_eq!(t.seal(2, &[], &mut []), Err(AeadError));
    }
}
