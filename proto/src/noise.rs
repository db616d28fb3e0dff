//! Noise_IK_25519_ChaChaPoly_BLAKE2s, both roles, with no allocation.
//!
//! ```text
//! IK:
//!   <- s
//!   ...
//!   -> e, es, s, ss      device (initiator), payload: InitPayload
//!   <- e, ee, se         gateway (responder), payload: RespPayload
//! ```
//! The device knows the gateway's static key in advance (it is pinned in
//! its provisioning), so one round trip authenticates both sides and the
//! device's identity travels encrypted. This is WireGuard's pattern, without
//! its pre-shared key and cookie layer. The caller supplies the ephemeral
//! key bytes (from its RNG), which also makes the test vectors reproducible.

use blake2::Blake2s256;
use blake2::digest::Digest;
use core::fmt;
use hmac::{Mac, SimpleHmac};
use zeroize::Zeroize;

use crate::aead::{Aead, RecordAead};
use crate::keys::{PublicKey, SecretKey};
use crate::wire::Cipher;

/// The Noise protocol name, hashed into the initial state.
pub const PROTOCOL_NAME: &[u8] = b"Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// AEAD tag length.
pub const TAG_LEN: usize = 16;
const DH_LEN: usize = 32;
/// Overhead of the first message over its payload: e, encrypted s, tag.
pub const MSG1_OVERHEAD: usize = DH_LEN + DH_LEN + TAG_LEN + TAG_LEN;
/// Overhead of the second message over its payload: e, tag.
pub const MSG2_OVERHEAD: usize = DH_LEN + TAG_LEN;

/// Why a handshake step failed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoiseError {
    /// The message has the wrong length for its position.
    BadLength,
    /// Authentication failed: the message was not made for these keys.
    Decrypt,
    /// A DH result was all zeros (a low-order public key).
    BadKey,
    /// The output buffer is too small.
    BufferTooSmall,
}

impl fmt::Display for NoiseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadLength => "handshake message has the wrong length",
            Self::Decrypt => "handshake message failed authentication",
            Self::BadKey => "low-order public key",
            Self::BufferTooSmall => "buffer too small",
        })
    }
}

impl core::error::Error for NoiseError {}

type Hmac = SimpleHmac<Blake2s256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Noise HKDF with two outputs.
fn hkdf2(ck: &[u8; 32], ikm: &[u8]) -> ([u8; 32], [u8; 32]) {
    let mut temp = hmac(ck, &[ikm]);
    let out1 = hmac(&temp, &[&[1]]);
    let out2 = hmac(&temp, &[&out1, &[2]]);
    temp.zeroize();
    (out1, out2)
}

/// A transport key and its nonce counter, one per direction.
pub struct CipherState {
    aead: RecordAead,
    n: u64,
}

impl CipherState {
    /// A fresh ChaCha20-Poly1305 state for `key`, nonce 0.
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            aead: RecordAead::ChaCha(Aead::new(key)),
            n: 0,
        }
    }

    /// The record cipher.
    pub fn cipher(&self) -> Cipher {
        match self.aead {
            RecordAead::ChaCha(_) => Cipher::ChaCha20Poly1305,
            #[cfg(feature = "ring")]
            RecordAead::AesGcm(_) => Cipher::Aes256Gcm,
        }
    }

    /// Moves a fresh (unused) ChaCha20-Poly1305 state to `cipher` under the
    /// same key: what a session does once the handshake chose AES-256-GCM.
    /// `false`, and nothing changes, when this build lacks `cipher` or the
    /// state has been used.
    pub fn set_cipher(&mut self, cipher: Cipher) -> bool {
        if self.cipher() == cipher {
            return true;
        }
        if self.n != 0 {
            return false;
        }
        match self.aead.to_aes_gcm() {
            Some(aes) if cipher == Cipher::Aes256Gcm => {
                self.aead = aes;
                true
            }
            _ => false,
        }
    }

    /// Frees what the cipher keeps beyond its key between records (AES-GCM's
    /// key schedule); the next record makes it again.
    pub fn release(&mut self) {
        self.aead.release();
    }

    /// The next nonce to be used.
    pub fn nonce(&self) -> u64 {
        self.n
    }

    /// Encrypts `buf` in place with associated data `ad`, returning the tag.
    /// `None` once the nonce space is spent (2^64 - 1 messages) or, under
    /// AES-256-GCM, the key's usage limit is reached.
    pub fn seal(&mut self, ad: &[u8], buf: &mut [u8]) -> Option<[u8; TAG_LEN]> {
        if self.n == u64::MAX {
            return None;
        }
        let tag = self.aead.seal(self.n, ad, buf).ok()?;
        self.n += 1;
        Some(tag)
    }

    /// Decrypts `buf` in place if `tag` authenticates it; the nonce advances
    /// only on success.
    pub fn open(
        &mut self,
        ad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), NoiseError> {
        if self.n == u64::MAX {
            return Err(NoiseError::Decrypt);
        }
        self.aead
            .open(self.n, ad, buf, tag)
            .map_err(|_| NoiseError::Decrypt)?;
        self.n += 1;
        Ok(())
    }
}

/// The two transport directions a finished handshake yields.
pub struct TransportKeys {
    /// For what this side sends.
    pub send: CipherState,
    /// For what this side receives.
    pub recv: CipherState,
    /// The handshake hash: identifies the session (channel binding).
    pub handshake_hash: [u8; 32],
}

struct SymmetricState {
    ck: [u8; 32],
    h: [u8; 32],
    k: Option<[u8; 32]>,
    n: u64,
}

impl SymmetricState {
    fn new(prologue: &[u8]) -> Self {
        let h: [u8; 32] = if PROTOCOL_NAME.len() <= 32 {
            let mut h = [0u8; 32];
            h[..PROTOCOL_NAME.len()].copy_from_slice(PROTOCOL_NAME);
            h
        } else {
            Blake2s256::digest(PROTOCOL_NAME).into()
        };
        let mut s = Self {
            ck: h,
            h,
            k: None,
            n: 0,
        };
        s.mix_hash(prologue);
        s
    }

    fn mix_hash(&mut self, data: &[u8]) {
        let mut d = Blake2s256::new();
        d.update(self.h);
        d.update(data);
        self.h = d.finalize().into();
    }

    fn mix_key(&mut self, ikm: &[u8; 32]) {
        let (ck, k) = hkdf2(&self.ck, ikm);
        self.ck = ck;
        self.k = Some(k);
        self.n = 0;
    }

    fn mix_dh(&mut self, secret: &SecretKey, public: &PublicKey) -> Result<(), NoiseError> {
        let mut shared = secret.dh(public).ok_or(NoiseError::BadKey)?;
        self.mix_key(&shared);
        shared.zeroize();
        Ok(())
    }

    /// EncryptAndHash of `len` plaintext bytes at the start of `out`; the tag
    /// is written after them. Returns the ciphertext length.
    fn encrypt_and_hash(&mut self, out: &mut [u8], len: usize) -> Result<usize, NoiseError> {
        let Some(k) = self.k else {
            // Not reached in IK (every payload follows a DH), kept for totality.
            self.mix_hash(&out[..len]);
            return Ok(len);
        };
        if out.len() < len + TAG_LEN {
            return Err(NoiseError::BufferTooSmall);
        }
        let mut c = CipherState {
            aead: RecordAead::ChaCha(Aead::new(&k)),
            n: self.n,
        };
        let (body, rest) = out.split_at_mut(len);
        let tag = c.seal(&self.h, body).ok_or(NoiseError::BufferTooSmall)?;
        rest[..TAG_LEN].copy_from_slice(&tag);
        self.n += 1;
        self.mix_hash(&out[..len + TAG_LEN]);
        Ok(len + TAG_LEN)
    }

    /// DecryptAndHash of `ciphertext` into `out`, returning the plaintext length.
    fn decrypt_and_hash(&mut self, ciphertext: &[u8], out: &mut [u8]) -> Result<usize, NoiseError> {
        let Some(k) = self.k else {
            return Err(NoiseError::Decrypt);
        };
        let len = ciphertext
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(NoiseError::BadLength)?;
        let body = out.get_mut(..len).ok_or(NoiseError::BufferTooSmall)?;
        body.copy_from_slice(&ciphertext[..len]);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&ciphertext[len..]);
        let mut c = CipherState {
            aead: RecordAead::ChaCha(Aead::new(&k)),
            n: self.n,
        };
        c.open(&self.h, body, &tag)?;
        self.n += 1;
        self.mix_hash(ciphertext);
        Ok(len)
    }

    fn split(&self) -> ([u8; 32], [u8; 32]) {
        hkdf2(&self.ck, &[])
    }
}

impl Drop for SymmetricState {
    fn drop(&mut self) {
        self.ck.zeroize();
        self.h.zeroize();
        if let Some(k) = self.k.as_mut() {
            k.zeroize();
        }
    }
}

/// The device's side of the handshake.
pub struct Initiator {
    sym: SymmetricState,
    s: SecretKey,
    e: SecretKey,
    rs: PublicKey,
}

impl Initiator {
    /// Starts a handshake with static key `s` towards responder `rs`, using
    /// `e` as the ephemeral key (fresh random bytes, never reused).
    pub fn new(s: SecretKey, rs: PublicKey, e: SecretKey, prologue: &[u8]) -> Self {
        let mut sym = SymmetricState::new(prologue);
        sym.mix_hash(&rs.0);
        Self { sym, s, e, rs }
    }

    /// Writes the first message (`e, es, s, ss` and `payload`) into `out`.
    pub fn write_message(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, NoiseError> {
        let total = MSG1_OVERHEAD + payload.len();
        let out = out.get_mut(..total).ok_or(NoiseError::BufferTooSmall)?;
        let e_pub = self.e.public_key();
        out[..DH_LEN].copy_from_slice(&e_pub.0);
        self.sym.mix_hash(&e_pub.0);
        self.sym.mix_dh(&self.e, &self.rs)?;
        let s_pub = self.s.public_key();
        let rest = &mut out[DH_LEN..];
        rest[..DH_LEN].copy_from_slice(&s_pub.0);
        let n = self.sym.encrypt_and_hash(rest, DH_LEN)?;
        self.sym.mix_dh(&self.s, &self.rs)?;
        let rest = &mut rest[n..];
        rest[..payload.len()].copy_from_slice(payload);
        self.sym.encrypt_and_hash(rest, payload.len())?;
        Ok(total)
    }

    /// Reads the second message, writing its payload into `payload`.
    /// Returns the payload length and the transport keys.
    pub fn read_message(
        mut self,
        msg: &[u8],
        payload: &mut [u8],
    ) -> Result<(usize, TransportKeys), NoiseError> {
        if msg.len() < MSG2_OVERHEAD {
            return Err(NoiseError::BadLength);
        }
        let mut re = [0u8; DH_LEN];
        re.copy_from_slice(&msg[..DH_LEN]);
        let re = PublicKey(re);
        self.sym.mix_hash(&re.0);
        self.sym.mix_dh(&self.e, &re)?;
        self.sym.mix_dh(&self.s, &re)?;
        let n = self.sym.decrypt_and_hash(&msg[DH_LEN..], payload)?;
        let (k1, k2) = self.sym.split();
        let keys = TransportKeys {
            send: CipherState::new(&k1),
            recv: CipherState::new(&k2),
            handshake_hash: self.sym.h,
        };
        Ok((n, keys))
    }
}

/// The gateway's side of the handshake.
pub struct Responder {
    sym: SymmetricState,
    s: SecretKey,
    e: SecretKey,
    re: PublicKey,
    rs: PublicKey,
}

impl Responder {
    /// Prepares to answer with static key `s` and ephemeral `e`.
    pub fn new(s: SecretKey, e: SecretKey, prologue: &[u8]) -> Self {
        let mut sym = SymmetricState::new(prologue);
        sym.mix_hash(&s.public_key().0);
        Self {
            sym,
            s,
            e,
            re: PublicKey([0; 32]),
            rs: PublicKey([0; 32]),
        }
    }

    /// Reads the first message, writing its payload into `payload`. Returns
    /// the payload length and the initiator's static key, which the caller
    /// must look up before answering.
    pub fn read_message(
        &mut self,
        msg: &[u8],
        payload: &mut [u8],
    ) -> Result<(usize, PublicKey), NoiseError> {
        if msg.len() < MSG1_OVERHEAD {
            return Err(NoiseError::BadLength);
        }
        self.re.0.copy_from_slice(&msg[..DH_LEN]);
        self.sym.mix_hash(&self.re.0);
        self.sym.mix_dh(&self.s, &self.re)?;
        let enc_s = &msg[DH_LEN..DH_LEN + DH_LEN + TAG_LEN];
        let mut rs = [0u8; DH_LEN];
        self.sym.decrypt_and_hash(enc_s, &mut rs)?;
        self.rs = PublicKey(rs);
        self.sym.mix_dh(&self.s, &self.rs)?;
        let n = self
            .sym
            .decrypt_and_hash(&msg[DH_LEN + DH_LEN + TAG_LEN..], payload)?;
        Ok((n, self.rs))
    }

    /// Writes the second message (`e, ee, se` and `payload`) into `out`.
    /// Returns its length and the transport keys.
    pub fn write_message(
        mut self,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(usize, TransportKeys), NoiseError> {
        let total = MSG2_OVERHEAD + payload.len();
        let out = out.get_mut(..total).ok_or(NoiseError::BufferTooSmall)?;
        let e_pub = self.e.public_key();
        out[..DH_LEN].copy_from_slice(&e_pub.0);
        self.sym.mix_hash(&e_pub.0);
        self.sym.mix_dh(&self.e, &self.re)?;
        self.sym.mix_dh(&self.e, &self.rs)?;
        let rest = &mut out[DH_LEN..];
        rest[..payload.len()].copy_from_slice(payload);
        self.sym.encrypt_and_hash(rest, payload.len())?;
        let (k1, k2) = self.sym.split();
        let keys = TransportKeys {
            send: CipherState::new(&k2),
            recv: CipherState::new(&k1),
            handshake_hash: self.sym.h,
        };
        Ok((total, keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state moves to AES-256-GCM only while unused, and only once; the
    /// two ends agree after it.
    #[test]
    fn set_cipher_only_on_a_fresh_state() {
        let key = [9u8; 32];
        let (mut a, mut b) = (CipherState::new(&key), CipherState::new(&key));
        assert_eq!(a.cipher(), Cipher::ChaCha20Poly1305);
        assert!(a.set_cipher(Cipher::ChaCha20Poly1305), "already so");
        let mut buf = *b"record";
        let tag = a.seal(&[], &mut buf).unwrap();
        b.open(&[], &mut buf, &tag).unwrap();
        // Used: no switch.
        assert!(!a.set_cipher(Cipher::Aes256Gcm));
        assert_eq!(a.cipher(), Cipher::ChaCha20Poly1305);
        let (mut c, mut d) = (CipherState::new(&key), CipherState::new(&key));
        let aes = cfg!(feature = "ring");
        assert_eq!(c.set_cipher(Cipher::Aes256Gcm), aes);
        assert_eq!(d.set_cipher(Cipher::Aes256Gcm), aes);
        let mut buf = *b"record";
        let tag = c.seal(&[], &mut buf).unwrap();
        d.open(&[], &mut buf, &tag).unwrap();
        assert_eq!(&buf, b"record");
        c.release();
        d.release();
        let tag = c.seal(&[], &mut buf).unwrap();
        d.open(&[], &mut buf, &tag).unwrap();
        assert_eq!(&buf, b"record");
    }

    /// At its usage limit an AES-256-GCM state seals nothing more (the
    /// session then ends with `NonceExhausted`) and opens nothing more.
    #[cfg(feature = "ring")]
    #[test]
    fn aes_gcm_state_stops_at_its_limit() {
        let key = [9u8; 32];
        let state = |left| CipherState {
            aead: RecordAead::AesGcm(crate::aead::AesGcm::with_blocks_left(&key, left)),
            n: 0,
        };
        // 32 bytes: 2 blocks + 1.
        let (mut tx, mut rx) = (state(3), state(3));
        let mut buf = [1u8; 32];
        let tag = tx.seal(&[], &mut buf).unwrap();
        rx.open(&[], &mut buf, &tag).unwrap();
        assert_eq!(tx.seal(&[], &mut buf), None);
        assert_eq!(rx.open(&[], &mut buf, &tag), Err(NoiseError::Decrypt));
        assert_eq!((tx.nonce(), rx.nonce()), (1, 1));
    }
}
