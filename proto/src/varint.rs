//! Variable-length integers, the QUIC encoding (RFC 9000 §16).
//!
//! The two high bits of the first byte give the length (1, 2, 4 or 8 bytes),
//! the rest is the value in network byte order. Values up to 63 take one byte,
//! up to 16,383 two. Decoding accepts non-minimal encodings, as QUIC does.

/// Largest value a varint can carry: 2^62 - 1.
pub const MAX: u64 = (1 << 62) - 1;

/// Number of bytes `v` takes when encoded minimally, or `None` above [`MAX`].
pub const fn encoded_len(v: u64) -> Option<usize> {
    if v < 1 << 6 {
        Some(1)
    } else if v < 1 << 14 {
        Some(2)
    } else if v < 1 << 30 {
        Some(4)
    } else if v <= MAX {
        Some(8)
    } else {
        None
    }
}

/// Decodes a varint at the start of `buf`: the value and the bytes it took.
/// `None` when `buf` is too short.
pub fn decode(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

/// Encodes `v` minimally at the start of `buf`, returning the bytes written.
/// `None` when `v` exceeds [`MAX`] or `buf` is too short.
pub fn encode(v: u64, buf: &mut [u8]) -> Option<usize> {
    let len = encoded_len(v)?;
    let out = buf.get_mut(..len)?;
    let tag: u8 = match len {
        1 => 0x00,
        2 => 0x40,
        4 => 0x80,
        _ => 0xc0,
    };
    for (i, b) in out.iter_mut().enumerate() {
        *b = (v >> (8 * (len - 1 - i))) as u8;
    }
    out[0] |= tag;
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9000_vectors() {
        // RFC 9000 Appendix A.1.
        let cases: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, value) in cases {
            assert_eq!(decode(bytes), Some((value, bytes.len())));
            let mut buf = [0u8; 8];
            let n = encode(value, &mut buf).unwrap();
            assert_eq!(&buf[..n], bytes);
        }
        // Non-minimal encodings decode.
        assert_eq!(decode(&[0x40, 0x25]), Some((37, 2)));
    }

    #[test]
    fn bounds() {
        let mut buf = [0u8; 8];
        assert_eq!(encode(MAX + 1, &mut buf), None);
        assert_eq!(encode(MAX, &mut buf), Some(8));
        assert_eq!(encode(64, &mut buf[..1]), None);
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0x80, 1, 2]), None);
    }
}
