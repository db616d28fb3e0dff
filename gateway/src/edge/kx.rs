//! X25519 key exchange for the browser side's TLS, on AWS-LC.
//!
//! Every handshake a browser makes (TLS 1.2's ECDHE, TLS 1.3's full and
//! resumed `psk_dhe_ke` ones) costs the server one X25519 key generation
//! and one shared-secret computation. In ring's code (fiat-crypto's field
//! arithmetic) the pair was about a third of the gateway's CPU per full
//! handshake; AWS-LC's (s2n-bignum's formally verified assembly) takes
//! half of ring's time for it (45 µs → 23 µs on the benchmark machine,
//! `kx-bench`; BENCHMARKS.md "Several TLS records per read; X25519 on
//! AWS-LC"). Everything else in the provider stays ring's: record
//! ciphers, signatures, the key schedule, the other groups.
//!
//! The group is rustls' [`SupportedKxGroup`] over `aws-lc-rs`'s agreement
//! API, with the same checks as ring's: a peer share that is not 32 bytes,
//! or that gives the all-zero secret (a small-order point, RFC 7748 §6.1),
//! is the peer's fault (`PeerMisbehaved::InvalidKeyShare`).

use aws_lc_rs::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey};
use rustls::crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::{Error, NamedGroup, PeerMisbehaved};

/// X25519 (RFC 7748) on AWS-LC, for a rustls provider's `kx_groups`.
pub static X25519: &dyn SupportedKxGroup = &X25519Group;

/// The key exchange groups of the gateway's TLS, in its order: X25519 on
/// AWS-LC, then ring's P-256 and P-384 (ring's own order). A client built
/// for the gateway (the load generator) offers the same.
pub fn groups() -> Vec<&'static dyn SupportedKxGroup> {
    vec![
        X25519,
        rustls::crypto::ring::kx_group::SECP256R1,
        rustls::crypto::ring::kx_group::SECP384R1,
    ]
}

/// The size of an X25519 public key and shared secret.
const LEN: usize = 32;

#[derive(Debug)]
struct X25519Group;

impl SupportedKxGroup for X25519Group {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let key = EphemeralPrivateKey::generate(&agreement::X25519, &rng)
            .map_err(|_| rustls::crypto::GetRandomFailed)?;
        let public = key
            .compute_public_key()
            .map_err(|_| rustls::crypto::GetRandomFailed)?;
        let mut pub_key = [0u8; LEN];
        if public.as_ref().len() != LEN {
            return Err(Error::General("X25519 public key of the wrong size".into()));
        }
        pub_key.copy_from_slice(public.as_ref());
        Ok(Box::new(Active { key, pub_key }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// One handshake's key pair.
struct Active {
    key: EphemeralPrivateKey,
    pub_key: [u8; LEN],
}

impl ActiveKeyExchange for Active {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, Error> {
        if peer.len() != LEN {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        let peer = UnparsedPublicKey::new(&agreement::X25519, peer);
        // AWS-LC refuses a small-order point (the all-zero secret) itself.
        agreement::agree_ephemeral(
            self.key,
            peer,
            Error::from(PeerMisbehaved::InvalidKeyShare),
            |secret| Ok(SharedSecret::from(secret)),
        )
    }

    fn pub_key(&self) -> &[u8] {
        &self.pub_key
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both sides of an exchange get the same secret, and it is ring's too:
    /// the two implementations agree on RFC 7748.
    #[test]
    fn agrees_with_ring() {
        let ring_x = rustls::crypto::ring::kx_group::X25519;
        for _ in 0..8 {
            let ours = X25519.start().unwrap();
            let theirs = ring_x.start().unwrap();
            assert_eq!(ours.pub_key().len(), 32);
            assert_eq!(ours.group(), NamedGroup::X25519);
            let their_pub = theirs.pub_key().to_vec();
            let our_pub = ours.pub_key().to_vec();
            let a = ours.complete(&their_pub).unwrap();
            let b = theirs.complete(&our_pub).unwrap();
            assert_eq!(a.secret_bytes(), b.secret_bytes());
            assert_ne!(a.secret_bytes(), &[0u8; 32]);
        }
    }

    /// A share of the wrong size, or a small-order point, fails the
    /// handshake as the peer's fault.
    #[test]
    fn a_bad_peer_share_is_the_peers_fault() {
        let invalid = |share: &[u8]| {
            let Err(err) = X25519.start().unwrap().complete(share) else {
                panic!("{share:?} was taken");
            };
            assert_eq!(
                err,
                Error::PeerMisbehaved(PeerMisbehaved::InvalidKeyShare),
                "{share:?}"
            );
        };
        invalid(&[]);
        invalid(&[9u8; 31]);
        invalid(&[9u8; 33]);
        // Small-order points give the all-zero secret (RFC 7748 §6.1).
        invalid(&[0u8; 32]);
        let mut one = [0u8; 32];
        one[0] = 1;
        invalid(&one);
    }
}
