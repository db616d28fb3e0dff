//! The server name (SNI) found in the first bytes a TLS client sends.
//!
//! The gateway drives rustls through its unbuffered API. rustls' unbuffered
//! server connection has no `server_name()` accessor, but the gateway needs
//! the SNI for its Host/SNI check. So it reads the SNI here, from the
//! ClientHello bytes it received, before rustls takes them.
//!
//! ## Rules
//!
//! - The bytes are TLS records: a 5-byte header (content type, legacy
//!   version, payload length), then the payload.
//! - The ClientHello is a handshake message (content type 22). It may be
//!   split over several consecutive handshake records. Their payloads are
//!   joined until the 4-byte handshake header (type 1, 24-bit length) and
//!   that many bytes are here. A hello that fits in the first record (the
//!   common case) is not copied.
//! - These make the bytes [`Scan::Invalid`]: a record of another type before
//!   the hello is complete, a handshake message other than client_hello, a
//!   record payload of 0 bytes or over 16,384 + 256 bytes, a hello over
//!   65,535 bytes.
//! - The hello body is read as RFC 8446 §4.1.2 lays it out. A length that
//!   runs past its enclosing field, or bytes left over after the
//!   extensions, make it [`Scan::Invalid`] too. A hello with no extensions
//!   has no server name.
//! - The server name is the first host_name entry of the first server_name
//!   extension. It must be ASCII and a valid DNS name. It is returned
//!   lowercased, with one trailing dot removed.
//! - An IP-address literal or an invalid name gives no server name: rustls
//!   ignores or refuses those, and the handshake decides.
//! - [`Scan::Invalid`] leaves the verdict to rustls: the gateway hands it
//!   the bytes anyway, with no server name.
//!
//! Scanning never panics, whatever the bytes.

use std::borrow::Cow;
use std::ops::Range;

use rustls_pki_types::DnsName;

/// Record content type of handshake messages.
const HANDSHAKE_RECORD: u8 = 22;
/// Content type, legacy version (u16), payload length (u16).
const RECORD_HEADER_LEN: usize = 5;
/// The largest record payload accepted (RFC 8446 §5.2 allows 2^14 + 256
/// for ciphertext; a plaintext record is smaller).
const MAX_RECORD_PAYLOAD: usize = 16_384 + 256;
/// Handshake message type of client_hello.
const CLIENT_HELLO: u8 = 1;
/// Handshake message type (u8), length (u24).
const HANDSHAKE_HEADER_LEN: usize = 4;
/// The largest ClientHello body accepted.
const MAX_HELLO_LEN: usize = 65_535;
/// The random field of the hello.
const RANDOM_LEN: usize = 32;
/// The longest legacy_session_id.
const MAX_SESSION_ID_LEN: usize = 32;
/// Extension type of server_name (RFC 6066 §3).
const SERVER_NAME_EXTENSION: u16 = 0;
/// Name type of a DNS host name in a ServerNameList.
const HOST_NAME: u8 = 0;

/// What the start of a connection's bytes says about its ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// The ClientHello is not complete yet: read more bytes and scan again.
    NeedMore,
    /// The whole ClientHello is here; its server name, if it has a usable one.
    Done(Option<String>),
    /// These bytes are not a TLS ClientHello (or one larger than 65,535 bytes):
    /// leave the verdict to rustls, with no server name.
    Invalid,
}

/// Scans `buf`, the bytes a client sent from the start of the connection.
///
/// Bytes after the ClientHello are ignored. The answer for a given hello
/// does not depend on how its bytes were split when they arrived.
pub fn scan(buf: &[u8]) -> Scan {
    let body = match hello_body(buf) {
        Ok(body) => body,
        Err(verdict) => return verdict,
    };
    match server_name(&body) {
        Ok(name) => Scan::Done(name),
        Err(Malformed) => Scan::Invalid,
    }
}

/// The ClientHello body (after its handshake header): borrowed from `buf`
/// when it fits in the first record, joined from several records
/// otherwise. `Err` holds the verdict when no whole hello is here.
fn hello_body(buf: &[u8]) -> Result<Cow<'_, [u8]>, Scan> {
    let (first, mut rest) = next_record(buf)?;
    if let Some(range) = body_range(first)? {
        return first.get(range).map(Cow::Borrowed).ok_or(Scan::Invalid);
    }
    let mut joined = first.to_vec();
    loop {
        let (payload, after) = next_record(rest)?;
        rest = after;
        joined.extend_from_slice(payload);
        if let Some(range) = body_range(&joined)? {
            joined.truncate(range.end);
            joined.drain(..range.start);
            return Ok(Cow::Owned(joined));
        }
    }
}

/// The payload of the handshake record at the start of `buf`, and the
/// bytes after it.
fn next_record(buf: &[u8]) -> Result<(&[u8], &[u8]), Scan> {
    match buf.first() {
        None => return Err(Scan::NeedMore),
        Some(&HANDSHAKE_RECORD) => {}
        Some(_) => return Err(Scan::Invalid),
    }
    let Some((&[_, _, _, len_high, len_low], after_header)) =
        buf.split_first_chunk::<RECORD_HEADER_LEN>()
    else {
        return Err(Scan::NeedMore);
    };
    let len = usize::from(u16::from_be_bytes([len_high, len_low]));
    if len == 0 || len > MAX_RECORD_PAYLOAD {
        return Err(Scan::Invalid);
    }
    after_header.split_at_checked(len).ok_or(Scan::NeedMore)
}

/// Where the hello body lies in `message` (the joined handshake payloads so
/// far), once all of it is there.
fn body_range(message: &[u8]) -> Result<Option<Range<usize>>, Scan> {
    match message.first() {
        None => return Ok(None),
        Some(&CLIENT_HELLO) => {}
        Some(_) => return Err(Scan::Invalid),
    }
    let Some(&[_, len_0, len_1, len_2]) = message.first_chunk::<HANDSHAKE_HEADER_LEN>() else {
        return Ok(None);
    };
    let len = (usize::from(len_0) << 16) | (usize::from(len_1) << 8) | usize::from(len_2);
    if len > MAX_HELLO_LEN {
        return Err(Scan::Invalid);
    }
    let end = HANDSHAKE_HEADER_LEN + len;
    Ok((message.len() >= end).then_some(HANDSHAKE_HEADER_LEN..end))
}

/// The hello body does not follow RFC 8446 §4.1.2.
struct Malformed;

/// The usable server name of a ClientHello body, if it has one.
fn server_name(body: &[u8]) -> Result<Option<String>, Malformed> {
    let mut hello = Cursor::new(body);
    hello.take(2)?; // legacy_version
    hello.take(RANDOM_LEN)?;
    let session_id = hello.u8_prefixed()?;
    let cipher_suites = hello.u16_prefixed()?;
    let compression_methods = hello.u8_prefixed()?;
    if session_id.len() > MAX_SESSION_ID_LEN
        || cipher_suites.len() < 2
        || cipher_suites.len() % 2 != 0
        || compression_methods.is_empty()
    {
        return Err(Malformed);
    }
    if hello.is_empty() {
        return Ok(None); // no extensions
    }
    let mut extensions = Cursor::new(hello.u16_prefixed()?);
    if !hello.is_empty() {
        return Err(Malformed);
    }
    // `None` until the first server_name extension is read; later ones are
    // only checked for their lengths.
    let mut first_server_name: Option<Option<String>> = None;
    while !extensions.is_empty() {
        let extension_type = extensions.u16()?;
        let data = extensions.u16_prefixed()?;
        if extension_type == SERVER_NAME_EXTENSION {
            let name = host_name(data)?;
            first_server_name.get_or_insert(name);
        }
    }
    Ok(first_server_name.flatten())
}

/// The usable name of the first host_name entry in the data of a
/// server_name extension (RFC 6066 §3).
fn host_name(extension_data: &[u8]) -> Result<Option<String>, Malformed> {
    let mut data = Cursor::new(extension_data);
    let mut list = Cursor::new(data.u16_prefixed()?);
    if !data.is_empty() {
        return Err(Malformed);
    }
    let mut first_host_name = None;
    while !list.is_empty() {
        let name_type = list.u8()?;
        let name = list.u16_prefixed()?;
        if name_type == HOST_NAME && first_host_name.is_none() {
            first_host_name = Some(name);
        }
    }
    Ok(first_host_name.and_then(usable_name))
}

/// `raw` as the gateway uses a server name: ASCII, a valid DNS name (not an
/// IP-address literal), lowercased, without one trailing dot.
fn usable_name(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw)
        .ok()
        .filter(|text| text.is_ascii())?;
    DnsName::try_from(text).ok()?;
    let name = text.strip_suffix('.').unwrap_or(text);
    Some(name.to_ascii_lowercase())
}

/// Reads big-endian fields from the front of a byte slice, never past its end.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Malformed> {
        let (taken, rest) = self.rest.split_at_checked(len).ok_or(Malformed)?;
        self.rest = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        let (&value, rest) = self.rest.split_first().ok_or(Malformed)?;
        self.rest = rest;
        Ok(value)
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        let (&bytes, rest) = self.rest.split_first_chunk::<2>().ok_or(Malformed)?;
        self.rest = rest;
        Ok(u16::from_be_bytes(bytes))
    }

    /// A field with a u8 length in front.
    fn u8_prefixed(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// A field with a u16 length in front.
    fn u16_prefixed(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls_pki_types::ServerName;

    use super::*;

    /// The bytes a rustls client sends first, for `name`.
    fn rustls_hello(name: ServerName<'static>) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut bytes = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut bytes).unwrap();
        }
        bytes
    }

    /// A real ClientHello in one record, for "Device-1.Example.COM".
    fn real_hello() -> Vec<u8> {
        let bytes = rustls_hello("Device-1.Example.COM".try_into().unwrap());
        let payload_len = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
        assert_eq!(bytes[0], HANDSHAKE_RECORD);
        assert_eq!(bytes.len(), RECORD_HEADER_LEN + payload_len, "one record");
        bytes
    }

    fn record(content_type: u8, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(payload.len()).unwrap();
        let mut bytes = vec![content_type, 3, 1];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// The handshake message of the one-record `hello`, re-framed into one
    /// handshake record per piece, cut at `cuts`.
    fn reframe(hello: &[u8], cuts: &[usize]) -> Vec<u8> {
        let message = &hello[RECORD_HEADER_LEN..];
        let mut bytes = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain([message.len()].iter()) {
            bytes.extend(record(HANDSHAKE_RECORD, &message[start..end]));
            start = end;
        }
        bytes
    }

    fn assert_prefixes_need_more(bytes: &[u8]) {
        for end in 0..bytes.len() {
            assert_eq!(scan(&bytes[..end]), Scan::NeedMore, "prefix of {end} bytes");
        }
    }

    /// A server_name extension with these (name_type, name) entries.
    fn server_name_extension(entries: &[(u8, &[u8])]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for (name_type, name) in entries {
            list.push(*name_type);
            list.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
            list.extend_from_slice(name);
        }
        let mut data = u16::try_from(list.len()).unwrap().to_be_bytes().to_vec();
        data.extend(list);
        (SERVER_NAME_EXTENSION, data)
    }

    /// A minimal ClientHello in one record; `None`: no extensions field.
    fn crafted_hello(extensions: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
        let mut body = vec![3, 3]; // legacy_version
        body.extend_from_slice(&[7; RANDOM_LEN]);
        body.push(0); // legacy_session_id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
        body.extend_from_slice(&[1, 0]); // null compression
        if let Some(extensions) = extensions {
            let mut block = Vec::new();
            for (extension_type, data) in extensions {
                block.extend_from_slice(&extension_type.to_be_bytes());
                block.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
                block.extend_from_slice(data);
            }
            body.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
            body.extend(block);
        }
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        let mut message = vec![CLIENT_HELLO, len[1], len[2], len[3]];
        message.extend(body);
        record(HANDSHAKE_RECORD, &message)
    }

    fn crafted_hello_named(name: &[u8]) -> Vec<u8> {
        let supported_versions = (43, vec![2, 3, 4]);
        crafted_hello(Some(&[
            supported_versions,
            server_name_extension(&[(HOST_NAME, name)]),
        ]))
    }

    fn done(name: &str) -> Scan {
        Scan::Done(Some(name.to_owned()))
    }

    #[test]
    fn a_real_hello_gives_its_name_lowercased_and_its_prefixes_need_more() {
        let hello = real_hello();
        assert_eq!(scan(&hello), done("device-1.example.com"));
        assert_prefixes_need_more(&hello);
        // What follows the hello does not change the answer.
        let mut followed = hello.clone();
        followed.extend(record(23, b"early"));
        assert_eq!(scan(&followed), done("device-1.example.com"));
    }

    #[test]
    fn a_hello_split_over_three_records_gives_the_same_name() {
        let hello = real_hello();
        let message_len = hello.len() - RECORD_HEADER_LEN;
        // One cut inside the handshake header, then thirds.
        for cuts in [[2, message_len / 2], [message_len / 3, 2 * message_len / 3]] {
            let split = reframe(&hello, &cuts);
            assert_eq!(split.len(), hello.len() + 2 * RECORD_HEADER_LEN);
            assert_eq!(scan(&split), done("device-1.example.com"), "cuts {cuts:?}");
            assert_prefixes_need_more(&split);
        }
    }

    #[test]
    fn a_client_with_an_ip_address_sends_no_name() {
        let ip = std::net::IpAddr::from([192, 0, 2, 1]);
        let hello = rustls_hello(ServerName::from(ip));
        assert_eq!(scan(&hello), Scan::Done(None));
    }

    #[test]
    fn crafted_names() {
        let scan_named = |name: &[u8]| scan(&crafted_hello_named(name));
        assert_eq!(scan_named(b"host.example."), done("host.example"));
        assert_eq!(scan_named(b"Host.Example"), done("host.example"));
        assert_eq!(scan_named(b"bad name"), Scan::Done(None));
        assert_eq!(scan_named(b"192.0.2.1"), Scan::Done(None));
        assert_eq!(scan_named(b"2001:db8::1"), Scan::Done(None));
        assert_eq!(scan_named("h\u{f4}te.example".as_bytes()), Scan::Done(None));
        assert_eq!(scan_named(b""), Scan::Done(None));
        assert_eq!(scan_named(b"host.example.."), Scan::Done(None));

        let scan_with = |extension: (u16, Vec<u8>)| scan(&crafted_hello(Some(&[extension])));
        let other_type_only = server_name_extension(&[(1, b"host.example")]);
        assert_eq!(scan_with(other_type_only), Scan::Done(None));
        let host_name_second = server_name_extension(&[(1, b"x"), (HOST_NAME, b"b.example")]);
        assert_eq!(scan_with(host_name_second), done("b.example"));
        let two = server_name_extension(&[(HOST_NAME, b"a.example"), (HOST_NAME, b"b.example")]);
        assert_eq!(scan_with(two), done("a.example"));
        assert_eq!(scan_with((43, vec![2, 3, 4])), Scan::Done(None));

        assert_eq!(scan(&crafted_hello(None)), Scan::Done(None));
        assert_eq!(scan(&crafted_hello(Some(&[]))), Scan::Done(None));
    }

    #[test]
    fn not_a_client_hello_is_invalid() {
        let hello = real_hello();

        let mut application_data = hello.clone();
        application_data[0] = 23;
        assert_eq!(scan(&application_data), Scan::Invalid);
        assert_eq!(scan(&application_data[..1]), Scan::Invalid);
        assert_eq!(scan(b"GET / HTTP/1.1\r\n"), Scan::Invalid);

        let mut server_hello = hello.clone();
        server_hello[RECORD_HEADER_LEN] = 2;
        assert_eq!(scan(&server_hello), Scan::Invalid);

        // 70,000 = 0x01_11_70: refused from its header alone.
        let too_long = record(HANDSHAKE_RECORD, &[CLIENT_HELLO, 0x01, 0x11, 0x70]);
        assert_eq!(scan(&too_long), Scan::Invalid);
        // The largest length allowed still waits for its bytes.
        let longest = record(HANDSHAKE_RECORD, &[CLIENT_HELLO, 0x00, 0xff, 0xff]);
        assert_eq!(scan(&longest), Scan::NeedMore);

        // ServerNameList length 16 in 6 bytes of extension data.
        let past_the_extension = (SERVER_NAME_EXTENSION, vec![0, 16, HOST_NAME, 0, 1, b'a']);
        assert_eq!(
            scan(&crafted_hello(Some(&[past_the_extension]))),
            Scan::Invalid
        );

        let empty_record = record(HANDSHAKE_RECORD, &[]);
        assert_eq!(scan(&empty_record), Scan::Invalid);
        let oversized_record = [HANDSHAKE_RECORD, 3, 1, 0x41, 0x01]; // 16,641 bytes
        assert_eq!(scan(&oversized_record), Scan::Invalid);

        // An alert between two handshake records of the hello.
        let split = reframe(&hello, &[10]);
        let second_record = RECORD_HEADER_LEN + 10;
        let mut interrupted = split[..second_record].to_vec();
        interrupted.extend(record(21, &[2, 40]));
        interrupted.extend_from_slice(&split[second_record..]);
        assert_eq!(scan(&interrupted), Scan::Invalid);

        // A hello whose extensions run past its end.
        let mut cut_short = crafted_hello_named(b"host.example");
        cut_short.truncate(cut_short.len() - 1);
        let len = u16::try_from(cut_short.len() - RECORD_HEADER_LEN).unwrap();
        cut_short[3..5].copy_from_slice(&len.to_be_bytes());
        cut_short[7..9].copy_from_slice(&(len - 4).to_be_bytes());
        assert_eq!(scan(&cut_short), Scan::Invalid);
    }

    /// xorshift64: deterministic and dependency-free.
    struct Prng(u64);

    impl Prng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(bound).unwrap()).unwrap()
        }

        fn byte(&mut self) -> u8 {
            self.next().to_be_bytes()[0]
        }
    }

    #[test]
    fn no_input_panics() {
        let mut prng = Prng(0x9e37_79b9_7f4a_7c15);
        let hello = real_hello();
        for _ in 0..10_000 {
            let mut mutated = hello.clone();
            for _ in 0..=prng.below(4) {
                let at = prng.below(mutated.len());
                mutated[at] = prng.byte();
            }
            let _ = scan(&mutated);
        }
        for _ in 0..10_000 {
            let random: Vec<u8> = (0..prng.below(600)).map(|_| prng.byte()).collect();
            let _ = scan(&random);
        }
    }
}
