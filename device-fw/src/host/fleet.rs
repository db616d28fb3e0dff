//! Fleets of simulated devices: ids and keys derived from a seed, so the
//! gateway's registry can be written once and matched by every run.

use std::fmt::Write as _;

use blake2::{Blake2s256, Digest};
use proto::{PublicKey, SecretKey};

/// One simulated device.
#[derive(Clone, Debug)]
pub struct DeviceSpec {
    /// Its id (a DNS label).
    pub id: String,
    /// Its static key.
    pub key: SecretKey,
}

/// `count` devices named `<prefix>-<n>` (n zero-padded to 4 digits, from
/// 0), each key = BLAKE2s("devlink-sim-key" ‖ seed ‖ n as u64 BE).
pub fn fleet(seed: &str, prefix: &str, count: usize) -> Vec<DeviceSpec> {
    (0..count)
        .map(|n| {
            let mut h = Blake2s256::new();
            h.update(b"devlink-sim-key");
            h.update(seed.as_bytes());
            h.update((n as u64).to_be_bytes());
            let key = SecretKey::from_bytes(h.finalize().into());
            DeviceSpec {
                id: format!("{prefix}-{n:04}"),
                key,
            }
        })
        .collect()
}

/// A 32-byte key from 64 hex digits (surrounding whitespace allowed).
pub fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    if t.len() != 64 {
        return Err(format!(
            "expected 64 hex digits, found {} characters",
            t.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| {
            format!(
                "not a hex digit pair at offset {}: {:?}",
                2 * i,
                &t[2 * i..2 * i + 2]
            )
        })?;
    }
    Ok(out)
}

/// The registry entries for `devices`, as the gateway's device file reads them.
pub fn registry_toml(devices: &[DeviceSpec]) -> String {
    let mut s = String::from(
        "# Simulated devices, written by device-sim. Keys are derived from a seed: test use only.\n",
    );
    for d in devices {
        let public: PublicKey = d.key.public_key();
        let _ = write!(
            s,
            "\n[[device]]\nid = \"{}\"\npublic_key = \"{public}\"\n",
            d.id
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_is_deterministic_and_distinct() {
        let a = fleet("s", "sim", 3);
        let b = fleet("s", "sim", 3);
        assert_eq!(a[2].key.to_bytes(), b[2].key.to_bytes());
        assert_ne!(a[0].key.to_bytes(), a[1].key.to_bytes());
        assert_ne!(fleet("t", "sim", 1)[0].key.to_bytes(), a[0].key.to_bytes());
        assert_eq!(a[1].id, "sim-0001");
        let toml = registry_toml(&a);
        assert_eq!(toml.matches("[[device]]").count(), 3);
        assert!(toml.contains(&a[2].key.public_key().to_string()));
    }

    #[test]
    fn keys_parse_strictly() {
        let hex = "11".repeat(32);
        assert_eq!(parse_key(&format!(" {hex}\n")), Ok([0x11; 32]));
        assert!(parse_key("11").unwrap_err().contains("64 hex digits"));
        assert!(
            parse_key(&"zz".repeat(32))
                .unwrap_err()
                .contains("offset 0")
        );
    }
}
