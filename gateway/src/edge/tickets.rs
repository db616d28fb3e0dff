//! The browser side's TLS randomness and session tickets, on AWS-LC.
//!
//! ring asks the kernel for every random value (one `getrandom` system
//! call each), and a full TLS 1.3 handshake with two tickets asks seven
//! times: the server random, then for each ticket its nonce, its age
//! mask and the nonce that encrypts it. AWS-LC draws from a generator in
//! the process (a CTR-DRBG per thread, seeded and reseeded from the
//! kernel), so [`Random`] and [`Ticketer`] make no system call per value
//! (BENCHMARKS.md, "Handshakes without system calls for randomness").
//!
//! [`Ticketer`] is the usual stateless design: tickets are the session
//! state sealed with AES-256-GCM under a key only this process knows,
//! `key name (16) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`, the key name as
//! additional data. The key is made at start and replaced every six hours
//! by rustls' [`TicketRotator`], which accepts tickets of the previous key
//! too: a ticket lives at most twelve hours, and a key no longer than
//! that, which bounds what a stolen key could decrypt. A ticket that does
//! not authenticate (another key, another process, altered, cut short) is
//! no ticket: the client gets a full handshake.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use rustls::crypto::GetRandomFailed;
use rustls::server::ProducesTickets;
use rustls::ticketer::TicketRotator;

/// How long one ticket key seals new tickets, seconds; it opens them for
/// twice as long.
const ROTATION: u32 = 6 * 60 * 60;
/// The ticket lifetime told to clients, seconds: no ticket outlives the
/// key that opens it.
const LIFETIME: u32 = 2 * ROTATION;
const KEY_NAME_LEN: usize = 16;
const TAG_LEN: usize = 16;

/// rustls' random values from AWS-LC's generator.
#[derive(Debug)]
pub struct Random;

/// For a rustls provider's `secure_random`.
pub static RANDOM: &dyn rustls::crypto::SecureRandom = &Random;

impl rustls::crypto::SecureRandom for Random {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        aws_lc_rs::rand::fill(buf).map_err(|_| GetRandomFailed)
    }
}

/// The gateway's session ticketer: [`Ticketer`] keys rotated every six
/// hours.
pub fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    Ok(Arc::new(TicketRotator::new(ROTATION, || {
        Ok(Box::new(Ticketer::new()?))
    })?))
}

/// Tickets sealed with one AES-256-GCM key.
pub struct Ticketer {
    key: LessSafeKey,
    name: [u8; KEY_NAME_LEN],
    /// The longest ticket made so far: anything longer is refused before
    /// it is opened (a partitioning oracle wants long ciphertexts).
    longest: AtomicUsize,
}

impl std::fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the key nor its name.
        f.debug_struct("Ticketer").finish_non_exhaustive()
    }
}

impl Ticketer {
    /// A ticketer with a fresh random key and key name.
    pub fn new() -> Result<Self, GetRandomFailed> {
        let mut key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| GetRandomFailed)?;
        let mut name = [0u8; KEY_NAME_LEN];
        aws_lc_rs::rand::fill(&mut name).map_err(|_| GetRandomFailed)?;
        let key = UnboundKey::new(&AES_256_GCM, &key)
            .unwrap_or_else(|e| unreachable!("32 bytes is an AES-256 key: {e}"));
        Ok(Self {
            key: LessSafeKey::new(key),
            name,
            longest: AtomicUsize::new(0),
        })
    }
}

impl ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        // A random nonce: a counter would tell which tickets came from
        // the same process, in what order.
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let head = KEY_NAME_LEN + NONCE_LEN;
        let mut ticket = Vec::with_capacity(head + plain.len() + TAG_LEN);
        ticket.extend_from_slice(&self.name);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.name),
                &mut ticket[head..],
            )
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        self.longest.fetch_max(ticket.len(), Ordering::Relaxed);
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() > self.longest.load(Ordering::Relaxed) {
            return None;
        }
        let (name, rest) = ticket.split_at_checked(KEY_NAME_LEN)?;
        // The name is public (it is in every ticket): no need to compare
        // it in constant time.
        if name != self.name {
            return None;
        }
        let (nonce, sealed) = rest.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut out = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(self.name), &mut out)
            .ok()?;
        let len = plain.len();
        out.truncate(len);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_under_its_own_key_only() {
        let t = Ticketer::new().unwrap();
        let state = b"the session's resumption state".to_vec();
        let a = t.encrypt(&state).unwrap();
        let b = t.encrypt(&state).unwrap();
        assert_eq!(a.len(), KEY_NAME_LEN + NONCE_LEN + state.len() + TAG_LEN);
        assert_ne!(a, b, "the same state sealed twice looks the same");
        assert!(a.windows(state.len()).all(|w| w != state), "in the clear");
        assert_eq!(t.decrypt(&a).as_deref(), Some(&state[..]));
        assert_eq!(t.decrypt(&b).as_deref(), Some(&state[..]));
        // Another process's key (another name), or the same name with
        // another key: no ticket.
        let other = Ticketer::new().unwrap();
        other.encrypt(&state).unwrap();
        assert_eq!(other.decrypt(&a), None);
        let mut renamed = other.encrypt(&state).unwrap();
        renamed[..KEY_NAME_LEN].copy_from_slice(&a[..KEY_NAME_LEN]);
        assert_eq!(t.decrypt(&renamed), None);
    }

    #[test]
    fn an_altered_or_cut_ticket_is_no_ticket() {
        let t = Ticketer::new().unwrap();
        let a = t.encrypt(&[7u8; 100]).unwrap();
        for i in 0..a.len() {
            let mut bad = a.clone();
            bad[i] ^= 0x40;
            assert_eq!(t.decrypt(&bad), None, "byte {i} flipped");
        }
        for len in 0..a.len() {
            assert_eq!(t.decrypt(&a[..len]), None, "cut to {len}");
        }
        let mut longer = a.clone();
        longer.push(0);
        assert_eq!(t.decrypt(&longer), None, "longer than any ticket made");
        // Before any ticket was made, nothing opens.
        assert_eq!(Ticketer::new().unwrap().decrypt(&a), None);
    }

    #[test]
    fn random_values_differ_and_fill_every_length() {
        use rustls::crypto::SecureRandom;
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        RANDOM.fill(&mut a).unwrap();
        RANDOM.fill(&mut b).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
        for len in [0, 1, 4, 12, 48, 1000] {
            let mut buf = vec![0u8; len];
            Random.fill(&mut buf).unwrap();
        }
    }

    #[test]
    fn the_rotating_ticketer_opens_its_own_tickets() {
        let t = ticketer().unwrap();
        assert!(t.enabled());
        assert_eq!(t.lifetime(), LIFETIME);
        let sealed = t.encrypt(b"state").unwrap();
        assert_eq!(t.decrypt(&sealed).as_deref(), Some(&b"state"[..]));
        assert_eq!(ticketer().unwrap().decrypt(&sealed), None);
    }
}
