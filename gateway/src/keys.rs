//! Keys as files and text: the gateway's key file and the hex form that
//! configuration files, `gateway keygen` and `device-sim --key-file` share.
//!
//! A key is 32 bytes written as 64 hex digits. A key file holds exactly
//! that and a newline (surrounding whitespace is tolerated when reading, so
//! `echo KEY > file` works). Private key files are created with mode 0600,
//! written to a temporary file and renamed into place, and never replaced
//! unless the caller asks for it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use proto::{PublicKey, SecretKey};

use crate::config::Secret;

/// Why a key could not be parsed, read, made or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not 64 hex digits.
    #[error("expected 64 hex digits, found {0} characters")]
    Length(usize),
    /// A character that is not a hex digit.
    #[error("not a hex digit at position {position}: {found:?}")]
    NotHex {
        /// 1-based character position.
        position: usize,
        /// The character.
        found: char,
    },
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A key file is there already.
    #[error("{} exists; refusing to overwrite a key (use --force to replace it)", .0.display())]
    Exists(PathBuf),
    /// The operating system's random generator failed.
    #[error("no randomness from the operating system: {0}")]
    Random(getrandom::Error),
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// 32 bytes from 64 hex digits (either case), surrounding whitespace allowed.
pub fn parse_hex32(text: &str) -> Result<[u8; 32], KeyError> {
    let t = text.trim();
    let count = t.chars().count();
    if count != 64 {
        return Err(KeyError::Length(count));
    }
    let mut out = [0u8; 32];
    let mut digits = t.chars().enumerate().map(|(i, c)| {
        c.to_digit(16).map(|d| d as u8).ok_or(KeyError::NotHex {
            position: i + 1,
            found: c,
        })
    });
    for byte in &mut out {
        let (Some(hi), Some(lo)) = (digits.next(), digits.next()) else {
            return Err(KeyError::Length(count));
        };
        *byte = (hi? << 4) | lo?;
    }
    Ok(out)
}

/// A public key from hex.
pub fn parse_public_key(text: &str) -> Result<PublicKey, KeyError> {
    parse_hex32(text).map(PublicKey)
}

/// A fresh private key from the operating system's generator.
pub fn generate() -> Result<SecretKey, KeyError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(KeyError::Random)?;
    let key = SecretKey::from_bytes(bytes);
    bytes.fill(0);
    Ok(key)
}

/// Reads a private key file.
pub fn read_key_file(path: &Path) -> Result<Secret<SecretKey>, KeyError> {
    let text = Secret::new(fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?);
    parse_hex32(text.expose()).map(|b| Secret::new(SecretKey::from_bytes(b)))
}

/// Writes `key` as a key file with mode 0600. Refuses to replace an
/// existing file unless `force`; the file appears whole or not at all.
pub fn write_key_file(path: &Path, key: &SecretKey, force: bool) -> Result<(), KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !force && fs::symlink_metadata(path).is_ok() {
        return Err(KeyError::Exists(path.to_path_buf()));
    }
    let name = path.file_name().ok_or_else(|| {
        io_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        ))
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let write = || -> io::Result<()> {
        let mut file = private_file(&tmp)?;
        file.write_all(format!("{}\n", to_hex(&key.to_bytes())).as_bytes())?;
        file.sync_all()?;
        if force {
            fs::rename(&tmp, path)
        } else {
            // Not rename: that would replace a file created meanwhile.
            fs::hard_link(&tmp, path)?;
            fs::remove_file(&tmp)
        }
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        if e.kind() == io::ErrorKind::AlreadyExists {
            KeyError::Exists(path.to_path_buf())
        } else {
            io_err(e)
        }
    })
}

#[cfg(unix)]
fn private_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_is_strict() {
        let bytes: [u8; 32] = core::array::from_fn(|i| (i * 37) as u8);
        let hex = to_hex(&bytes);
        assert_eq!(hex.len(), 64);
        assert_eq!(parse_hex32(&hex).unwrap(), bytes);
        assert_eq!(
            parse_hex32(&format!("  {}\n", hex.to_uppercase())).unwrap(),
            bytes
        );
        assert!(matches!(parse_hex32("abcd"), Err(KeyError::Length(4))));
        let mut bad = hex.clone();
        bad.replace_range(9..10, "g");
        let e = parse_hex32(&bad).unwrap_err();
        assert!(
            matches!(
                e,
                KeyError::NotHex {
                    position: 10,
                    found: 'g'
                }
            ),
            "{e}"
        );
        // Multi-byte characters count as one.
        assert!(matches!(
            parse_hex32(&"é".repeat(64)),
            Err(KeyError::NotHex { position: 1, .. })
        ));
    }

    #[test]
    fn generated_keys_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.to_bytes(), b.to_bytes());
    }
}
