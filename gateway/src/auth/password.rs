//! Passwords (argon2id, PHC strings) and API tokens (random, stored as
//! SHA-256).
//!
//! Verification of an unknown user runs against a fixed dummy hash of the
//! same cost, so "no such user" and "wrong password" take the same time
//! and get the same answer.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2};
use sha2::{Digest as _, Sha256};

/// Why a stored hash is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Not a PHC string.
    #[error("not a PHC hash string ($argon2id$v=19$m=...,t=...,p=...$salt$hash): {0}")]
    Format(String),
    /// Another algorithm.
    #[error("algorithm {0} is not argon2id")]
    Algorithm(String),
}

/// Hashes `password` with argon2id (the crate's defaults: m = 19 MiB, t = 2,
/// p = 1, a random 16-byte salt), as a PHC string.
pub fn hash(password: &str) -> String {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).unwrap_or_else(|e| panic!("no randomness for a salt: {e}"));
    let salt = SaltString::encode_b64(&raw)
        .unwrap_or_else(|e| unreachable!("16 bytes make a valid salt: {e}"));
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_or_else(
            |e| unreachable!("argon2 defaults are valid: {e}"),
            |h| h.to_string(),
        )
}

/// Checks that `phc` is an argon2id PHC string.
pub fn check(phc: &str) -> Result<(), HashError> {
    let h = PasswordHash::new(phc).map_err(|e| HashError::Format(e.to_string()))?;
    if h.algorithm != Algorithm::Argon2id.ident() {
        return Err(HashError::Algorithm(h.algorithm.to_string()));
    }
    Ok(())
}

fn dummy() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash("no user has this password"))
}

/// Verifies `password` against `phc`; with `None` (unknown user) the same
/// work is done against a dummy hash and the answer is false.
pub fn verify(phc: Option<&str>, password: &str) -> bool {
    let (phc, real) = match phc {
        Some(p) => (p, true),
        None => (dummy(), false),
    };
    let Ok(h) = PasswordHash::new(phc) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &h)
        .is_ok();
    ok && real
}

/// A new API token: `dlt_` and 43 characters of base64url (256 random bits).
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap_or_else(|e| panic!("no randomness for a token: {e}"));
    format!("dlt_{}", base64url(&b))
}

/// The stored form of a token: SHA-256, hex. (Tokens are random; a slow
/// hash adds nothing and would cost every API request.)
pub fn token_digest(token: &str) -> String {
    crate::keys::to_hex(&Sha256::digest(token.as_bytes()))
}

/// Random bytes as base64url without padding.
pub fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_unknown_users_never_do() {
        let h = hash("correct horse");
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        check(&h).unwrap();
        assert!(verify(Some(&h), "correct horse"));
        assert!(!verify(Some(&h), "wrong"));
        assert!(!verify(None, "correct horse"));
        assert!(!verify(None, "no user has this password"));
        assert!(!verify(Some("garbage"), "x"));
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            argon2::Version::V0x13,
            argon2::Params::default(),
        )
        .hash_password(b"x", &salt)
        .unwrap()
        .to_string();
        assert!(
            matches!(check(&argon2i), Err(HashError::Algorithm(_))),
            "{argon2i}"
        );
        assert!(matches!(check("plain"), Err(HashError::Format(_))));
    }

    #[test]
    fn tokens_are_random_and_digested() {
        let a = new_token();
        assert!(a.starts_with("dlt_") && a.len() == 4 + 43, "{a}");
        assert_ne!(a, new_token());
        assert_eq!(
            token_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
