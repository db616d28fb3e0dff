//! TLS 1.3 AES-GCM records for the browser side's TLS, on AWS-LC.
//!
//! Every byte a browser sends or receives goes through one AES-GCM pass on
//! the gateway. ring's AES-GCM runs 256-bit vector AES (VAES with AVX2);
//! AWS-LC's runs 512-bit vector AES where the CPU has AVX-512: on the
//! benchmark machine a full 16 KiB record costs two thirds of ring's time
//! to seal and open (`record-bench`: sealing 119 → 67 µs per MB), and a
//! 64-byte one 9 ns more (BENCHMARKS.md, "AES-GCM on AWS-LC"). CPUs
//! without AVX-512 were not measured.
//!
//! The suites are ring's TLS 1.3 AES-GCM suites with only the record
//! cipher replaced: the same key schedule (ring's HKDF), the same QUIC
//! packet protection, the same limits. The record layer is RFC 8446 §5.2
//! and §5.3: the per-record nonce is the IV XOR the 64-bit sequence number,
//! the additional data is the record header, and the inner plaintext ends
//! with the real content type. ChaCha20-Poly1305 and the TLS 1.2 suites stay
//! ring's.

use std::sync::LazyLock;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, UnboundKey};
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter, MessageEncrypter,
    Nonce, OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload, Tls13AeadAlgorithm,
    UnsupportedOperationError, make_tls13_aad,
};
use rustls::{ConnectionTrafficSecrets, ContentType, Error, ProtocolVersion, SupportedCipherSuite};

/// TLS_AES_128_GCM_SHA256 with AWS-LC's records.
pub static TLS13_AES_128_GCM_SHA256: LazyLock<SupportedCipherSuite> = LazyLock::new(|| {
    with_records(
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        &Gcm::AES_128,
    )
});

/// TLS_AES_256_GCM_SHA384 with AWS-LC's records.
pub static TLS13_AES_256_GCM_SHA384: LazyLock<SupportedCipherSuite> = LazyLock::new(|| {
    with_records(
        rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
        &Gcm::AES_256,
    )
});

/// `suite` (a TLS 1.3 suite) with its record cipher replaced by `aead`.
fn with_records(suite: SupportedCipherSuite, aead: &'static Gcm) -> SupportedCipherSuite {
    let SupportedCipherSuite::Tls13(base) = suite else {
        unreachable!("ring's TLS 1.3 suites are TLS 1.3 suites")
    };
    let common = &base.common;
    SupportedCipherSuite::Tls13(Box::leak(Box::new(rustls::Tls13CipherSuite {
        common: rustls::CipherSuiteCommon {
            suite: common.suite,
            hash_provider: common.hash_provider,
            confidentiality_limit: common.confidentiality_limit,
        },
        hkdf_provider: base.hkdf_provider,
        aead_alg: aead,
        quic: base.quic,
    })))
}

/// The length of an AES-GCM tag.
const TAG_LEN: usize = 16;

/// An AES-GCM variant: the AWS-LC algorithm and how rustls names its keys
/// for kernel TLS.
struct Gcm {
    alg: &'static aead::Algorithm,
    secrets: fn(AeadKey, Iv) -> ConnectionTrafficSecrets,
}

impl Gcm {
    const AES_128: Self = Self {
        alg: &aead::AES_128_GCM,
        secrets: |key, iv| ConnectionTrafficSecrets::Aes128Gcm { key, iv },
    };
    const AES_256: Self = Self {
        alg: &aead::AES_256_GCM,
        secrets: |key, iv| ConnectionTrafficSecrets::Aes256Gcm { key, iv },
    };

    fn key(&self, key: &AeadKey) -> LessSafeKey {
        // rustls derives `key_len()` bytes of key for this suite.
        let key = UnboundKey::new(self.alg, key.as_ref())
            .unwrap_or_else(|_| unreachable!("rustls gives a key of key_len() bytes"));
        LessSafeKey::new(key)
    }
}

impl Tls13AeadAlgorithm for Gcm {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(Sealer {
            key: self.key(&key),
            iv,
        })
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(Opener {
            key: self.key(&key),
            iv,
        })
    }

    fn key_len(&self) -> usize {
        self.alg.key_len()
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok((self.secrets)(key, iv))
    }
}

/// The record nonce: the IV XOR the sequence number (RFC 8446 §5.3).
fn nonce(iv: &Iv, seq: u64) -> aead::Nonce {
    aead::Nonce::assume_unique_for_key(Nonce::new(iv, seq).0)
}

/// One direction's sealing key.
struct Sealer {
    key: LessSafeKey,
    iv: Iv,
}

impl MessageEncrypter for Sealer {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total);
        payload.extend_from_chunks(&msg.payload);
        payload.extend_from_slice(&msg.typ.to_array());
        let aad = Aad::from(make_tls13_aad(total));
        self.key
            .seal_in_place_append_tag(nonce(&self.iv, seq), aad, &mut payload)
            .map_err(|_| Error::EncryptError)?;
        // Every TLS 1.3 record says application data, version 1.2 (§5.2).
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + TAG_LEN
    }
}

/// One direction's opening key.
struct Opener {
    key: LessSafeKey,
    iv: Iv,
}

impl MessageDecrypter for Opener {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &mut msg.payload;
        if payload.len() < TAG_LEN {
            return Err(Error::DecryptError);
        }
        let aad = Aad::from(make_tls13_aad(payload.len()));
        let plain = self
            .key
            .open_in_place(nonce(&self.iv, seq), aad, &mut payload[..])
            .map_err(|_| Error::DecryptError)?
            .len();
        payload.truncate(plain);
        msg.into_tls13_unpadded_message()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::OutboundChunks;
    use rustls::crypto::ring::cipher_suite as ring_suites;

    fn aead(suite: SupportedCipherSuite) -> &'static dyn Tls13AeadAlgorithm {
        suite.tls13().unwrap().aead_alg
    }

    fn seal(enc: &mut dyn MessageEncrypter, typ: ContentType, data: &[u8], seq: u64) -> Vec<u8> {
        let chunks = [&data[..data.len() / 2], &data[data.len() / 2..]];
        let msg = OutboundPlainMessage {
            typ,
            version: ProtocolVersion::TLSv1_3,
            payload: OutboundChunks::new(&chunks),
        };
        enc.encrypt(msg, seq).unwrap().encode()
    }

    /// Opens a whole record (header included); the content type and
    /// plaintext, or the error.
    fn open(
        dec: &mut dyn MessageDecrypter,
        mut record: Vec<u8>,
        seq: u64,
    ) -> Result<(ContentType, Vec<u8>), Error> {
        let msg = InboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            &mut record[5..],
        );
        dec.decrypt(msg, seq).map(|m| (m.typ, m.payload.to_vec()))
    }

    /// AES-256-GCM records sealed here are the bytes ring seals, and each
    /// side opens the other's, for lengths around the block and record
    /// sizes and for each content type. (AES-128-GCM takes a 16-byte key,
    /// which only rustls' key schedule makes: the handshake tests in
    /// `tls_stream` cover it against a ring client.)
    #[test]
    fn records_are_rings_bytes_both_ways() {
        let (ours, ring) = (
            aead(*TLS13_AES_256_GCM_SHA384),
            aead(ring_suites::TLS13_AES_256_GCM_SHA384),
        );
        assert_eq!(ours.key_len(), 32);
        let key = || AeadKey::from(core::array::from_fn(|i| (i * 29 + 3) as u8));
        let iv = || Iv::from([9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11, 12]);
        let (mut our_seal, mut ring_seal) =
            (ours.encrypter(key(), iv()), ring.encrypter(key(), iv()));
        let (mut our_open, mut ring_open) =
            (ours.decrypter(key(), iv()), ring.decrypter(key(), iv()));
        let data: Vec<u8> = (0..16_384u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut seq = 0;
        for n in [0, 1, 15, 16, 17, 64, 255, 1000, 4096, 16_383, 16_384] {
            for typ in [
                ContentType::ApplicationData,
                ContentType::Handshake,
                ContentType::Alert,
            ] {
                let a = seal(&mut *our_seal, typ, &data[..n], seq);
                let b = seal(&mut *ring_seal, typ, &data[..n], seq);
                assert_eq!(a, b, "length {n}, {typ:?}");
                assert_eq!(a.len(), 5 + our_seal.encrypted_payload_len(n));
                assert_eq!(open(&mut *our_open, b, seq), Ok((typ, data[..n].to_vec())));
                assert_eq!(open(&mut *ring_open, a, seq), Ok((typ, data[..n].to_vec())));
                seq += 1;
            }
        }
        // The keys rustls would hand to kernel TLS are named as ring's.
        assert!(matches!(
            ours.extract_keys(key(), iv()),
            Ok(ConnectionTrafficSecrets::Aes256Gcm { .. })
        ));
    }

    /// A flipped bit, another sequence number, a record shorter than a tag
    /// and a record of padding alone are errors, not panics.
    #[test]
    fn bad_records_are_decrypt_errors() {
        let ours = aead(*TLS13_AES_256_GCM_SHA384);
        let key = || AeadKey::from([5; 32]);
        let iv = || Iv::from([1; 12]);
        let (mut enc, mut dec) = (ours.encrypter(key(), iv()), ours.decrypter(key(), iv()));
        let good = seal(&mut *enc, ContentType::ApplicationData, &[7; 100], 3);
        let mut flipped = good.clone();
        flipped[40] ^= 1;
        assert_eq!(open(&mut *dec, flipped, 3), Err(Error::DecryptError));
        assert_eq!(open(&mut *dec, good.clone(), 4), Err(Error::DecryptError));
        assert_eq!(
            open(&mut *dec, good[..5 + 15].to_vec(), 3),
            Err(Error::DecryptError)
        );
        assert_eq!(open(&mut *dec, good, 3).map(|m| m.1.len()), Ok(100));
        // An inner plaintext of padding alone has no content type (RFC 8446
        // §5.4): refused.
        let raw = LessSafeKey::new(UnboundKey::new(&aead::AES_256_GCM, &[5; 32]).unwrap());
        let mut padding = [0u8; 1];
        let tag = raw
            .seal_in_place_separate_tag(
                nonce(&iv(), 6),
                Aad::from(make_tls13_aad(17)),
                &mut padding,
            )
            .unwrap();
        let mut record = vec![23, 3, 3, 0, 17];
        record.extend_from_slice(&padding);
        record.extend_from_slice(tag.as_ref());
        assert!(open(&mut *dec, record, 6).is_err());
    }

    /// The suites keep ring's identity: name, hash, key schedule, QUIC.
    #[test]
    fn suites_are_rings_but_for_the_records() {
        for (ours, ring) in [
            (
                &*TLS13_AES_128_GCM_SHA256,
                ring_suites::TLS13_AES_128_GCM_SHA256,
            ),
            (
                &*TLS13_AES_256_GCM_SHA384,
                ring_suites::TLS13_AES_256_GCM_SHA384,
            ),
        ] {
            assert_eq!(ours.suite(), ring.suite());
            let (o, r) = (ours.tls13().unwrap(), ring.tls13().unwrap());
            assert!(o.quic.is_some());
            assert_eq!(
                o.common.confidentiality_limit,
                r.common.confidentiality_limit
            );
            assert_eq!(o.aead_alg.key_len(), r.aead_alg.key_len());
            assert!(!std::ptr::addr_eq(o.aead_alg, r.aead_alg));
        }
    }
}
