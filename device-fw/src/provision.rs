//! The provisioning block: what a device needs to find and trust its
//! gateway, written once to a fixed place in flash.
//!
//! ```text
//! magic "DLNK" | version u8 = 1 | gateway IPv4 [4] | gateway port u16
//! | id_len u8 | device id (1..=63, a DNS label) | device private key [32]
//! | gateway public key [32] | CRC-32 (IEEE 802.3) of everything before, u32
//! ```
//! Integers are big-endian. Erased flash (all `0xff`) is reported as
//! [`ProvisionError::Blank`], so a device that was never provisioned says so.

use core::fmt;

/// Magic bytes at the start of the block.
pub const MAGIC: [u8; 4] = *b"DLNK";
/// Format version this firmware reads.
pub const VERSION: u8 = 1;
/// Largest encoded block.
pub const MAX_LEN: usize = 4 + 1 + 4 + 2 + 1 + 63 + 32 + 32 + 4;

/// A device's provisioning.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Provisioning<'a> {
    /// The gateway's device-link address.
    pub gateway_ip: [u8; 4],
    /// Its port.
    pub gateway_port: u16,
    /// The device's id.
    pub device_id: &'a str,
    /// The device's X25519 private key.
    pub device_key: [u8; 32],
    /// The gateway's X25519 public key.
    pub gateway_key: [u8; 32],
}

impl fmt::Debug for Provisioning<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provisioning")
            .field("gateway_ip", &self.gateway_ip)
            .field("gateway_port", &self.gateway_port)
            .field("device_id", &self.device_id)
            .field("device_key", &"..")
            .finish()
    }
}

/// Why a provisioning block was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvisionError {
    /// Erased flash: the device was never provisioned.
    Blank,
    /// Not a provisioning block.
    BadMagic,
    /// A format this firmware does not read.
    Version(u8),
    /// The block ends early.
    Truncated,
    /// The device id is not a DNS label.
    BadId,
    /// The checksum does not match (corrupted or partly written).
    Checksum,
    /// The output buffer is too small.
    BufferTooSmall,
}

impl fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Blank => f.write_str("no provisioning block (erased flash)"),
            Self::BadMagic => f.write_str("not a provisioning block"),
            Self::Version(v) => write!(f, "provisioning format {v} is not supported"),
            Self::Truncated => f.write_str("provisioning block is truncated"),
            Self::BadId => f.write_str("device id is not a lower-case DNS label"),
            Self::Checksum => f.write_str("provisioning block checksum mismatch"),
            Self::BufferTooSmall => f.write_str("buffer too small"),
        }
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it), bitwise: no table in flash.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

impl<'a> Provisioning<'a> {
    /// Reads a block from the start of `buf` (which may be longer).
    pub fn parse(buf: &'a [u8]) -> Result<Self, ProvisionError> {
        if buf.len() >= 4 && buf[..4] == [0xff; 4] {
            return Err(ProvisionError::Blank);
        }
        let get = |r: core::ops::Range<usize>| buf.get(r).ok_or(ProvisionError::Truncated);
        if get(0..4)? != MAGIC {
            return Err(ProvisionError::BadMagic);
        }
        let version = get(4..5)?[0];
        if version != VERSION {
            return Err(ProvisionError::Version(version));
        }
        let mut gateway_ip = [0u8; 4];
        gateway_ip.copy_from_slice(get(5..9)?);
        let port = get(9..11)?;
        let gateway_port = u16::from_be_bytes([port[0], port[1]]);
        let id_len = usize::from(get(11..12)?[0]);
        let id_end = 12 + id_len;
        let id = core::str::from_utf8(get(12..id_end)?).map_err(|_| ProvisionError::BadId)?;
        let mut device_key = [0u8; 32];
        device_key.copy_from_slice(get(id_end..id_end + 32)?);
        let mut gateway_key = [0u8; 32];
        gateway_key.copy_from_slice(get(id_end + 32..id_end + 64)?);
        let body_end = id_end + 64;
        let crc = get(body_end..body_end + 4)?;
        if crc32(&buf[..body_end]) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(ProvisionError::Checksum);
        }
        if !proto::wire::valid_device_id(id) {
            return Err(ProvisionError::BadId);
        }
        Ok(Self {
            gateway_ip,
            gateway_port,
            device_id: id,
            device_key,
            gateway_key,
        })
    }

    /// Writes the block into `out`, returning its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, ProvisionError> {
        if !proto::wire::valid_device_id(self.device_id) {
            return Err(ProvisionError::BadId);
        }
        let id = self.device_id.as_bytes();
        let len = 12 + id.len() + 64 + 4;
        let out = out.get_mut(..len).ok_or(ProvisionError::BufferTooSmall)?;
        out[..4].copy_from_slice(&MAGIC);
        out[4] = VERSION;
        out[5..9].copy_from_slice(&self.gateway_ip);
        out[9..11].copy_from_slice(&self.gateway_port.to_be_bytes());
        out[11] = id.len() as u8;
        out[12..12 + id.len()].copy_from_slice(id);
        let k = 12 + id.len();
        out[k..k + 32].copy_from_slice(&self.device_key);
        out[k + 32..k + 64].copy_from_slice(&self.gateway_key);
        let crc = crc32(&out[..k + 64]);
        out[k + 64..].copy_from_slice(&crc.to_be_bytes());
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Provisioning<'static> {
        Provisioning {
            gateway_ip: [127, 0, 0, 1],
            gateway_port: 7000,
            device_id: "plc-7",
            device_key: [0x11; 32],
            gateway_key: [0x22; 32],
        }
    }

    #[test]
    fn crc_matches_zlib() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn round_trip_and_every_corruption_is_caught() {
        let mut buf = [0xffu8; MAX_LEN + 16];
        let n = sample().encode(&mut buf).unwrap();
        assert_eq!(Provisioning::parse(&buf), Ok(sample()));
        for cut in 0..n {
            assert!(Provisioning::parse(&buf[..cut]).is_err(), "cut {cut}");
        }
        for i in 0..n {
            let mut bad = buf;
            bad[i] ^= 0x01;
            assert!(Provisioning::parse(&bad).is_err(), "flip at {i}");
        }
        assert_eq!(
            Provisioning::parse(&[0xff; 200]),
            Err(ProvisionError::Blank)
        );
        assert_eq!(Provisioning::parse(b"XXXX"), Err(ProvisionError::BadMagic));
        let mut v2 = buf;
        v2[4] = 2;
        assert_eq!(Provisioning::parse(&v2), Err(ProvisionError::Version(2)));
        let bad_id = Provisioning {
            device_id: "Bad",
            ..sample()
        };
        assert_eq!(bad_id.encode(&mut buf), Err(ProvisionError::BadId));
        assert!(
            !std::format!("{:?}", sample()).contains("17"),
            "the key stays out of Debug"
        );
    }
}
