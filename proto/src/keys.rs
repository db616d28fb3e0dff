//! X25519 keys as the protocol and its users handle them.

use core::fmt;
use zeroize::Zeroize;

/// A public X25519 key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// Lower-case hex.
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A private X25519 key (static or ephemeral). Zeroed on drop; `Debug` hides it.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// A key from 32 bytes (random ones for an ephemeral; clamping happens in X25519).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, for storing a key the caller generated.
    pub const fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        let s = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&s).to_bytes())
    }

    /// X25519 with `peer`. `None` when the result is all zeros (a low-order
    /// peer key), which Noise allows an implementation to refuse; we do.
    pub(crate) fn dh(&self, peer: &PublicKey) -> Option<[u8; 32]> {
        let s = x25519_dalek::StaticSecret::from(self.0);
        let shared = s.diffie_hellman(&x25519_dalek::PublicKey::from(peer.0));
        if shared.was_contributory() {
            Some(shared.to_bytes())
        } else {
            None
        }
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}
