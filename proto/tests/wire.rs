//! Decoder rules: what each wire structure refuses, and round trips.

mod common;

use proto::wire::{
    Cipher, Ciphers, Header, HeaderList, InitPayload, Params, RequestHead, RespPayload,
    ResponseHead, Status, WireError, valid_device_id,
};
use proto::{Hello, Service, ServiceKind, ServiceList, StrList};

fn emit_hello(h: &Hello<'_>) -> Result<Vec<u8>, WireError> {
    let mut buf = vec![0u8; 4096];
    let n = h.emit(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

#[test]
fn hello_round_trip_and_lookup() {
    let h = common::hello();
    let bytes = emit_hello(&h).unwrap();
    assert_eq!(bytes.len(), h.buffer_len());
    let p = Hello::parse(&bytes).unwrap();
    assert_eq!(p, h);
    let (i, web) = p.services.by_name("web").unwrap();
    assert_eq!((i, web.kind), (0, ServiceKind::Http));
    assert!(web.subprotocols.contains("chat") && !web.subprotocols.contains("Chat"));
    assert_eq!(p.services.by_index(1).unwrap().name, "shell");
    assert!(p.services.by_index(2).is_none());
    // Any truncation is refused, never a panic.
    for cut in 0..bytes.len() {
        assert!(Hello::parse(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(Hello::parse(&longer), Err(WireError::TrailingBytes));
}

#[test]
fn device_ids_are_dns_labels() {
    for ok in ["a", "plc-7", "0", &"x".repeat(63)] {
        assert!(valid_device_id(ok), "{ok}");
    }
    for bad in ["", "-a", "a-", "A", "a.b", "a_b", "é", &"x".repeat(64)] {
        assert!(!valid_device_id(bad), "{bad}");
        let h = Hello {
            device_id: bad,
            ..common::hello()
        };
        assert!(emit_hello(&h).is_err(), "{bad}");
    }
}

#[test]
fn hello_refuses_bad_services() {
    let dup = [
        Service {
            name: "web",
            kind: ServiceKind::Http,
            subprotocols: StrList::Slice(&[]),
        },
        Service {
            name: "web",
            kind: ServiceKind::Raw,
            subprotocols: StrList::Slice(&[]),
        },
    ];
    let h = Hello {
        services: ServiceList::Slice(&dup),
        ..common::hello()
    };
    assert!(emit_hello(&h).is_err(), "duplicate names");
    let bad_proto = [Service {
        name: "web",
        kind: ServiceKind::Http,
        subprotocols: StrList::Slice(&["a b"]),
    }];
    let h = Hello {
        services: ServiceList::Slice(&bad_proto),
        ..common::hello()
    };
    assert!(emit_hello(&h).is_err(), "space in a subprotocol");
    // A duplicate crafted on the wire is refused by the parser as well.
    let one = [Service {
        name: "web",
        kind: ServiceKind::Http,
        subprotocols: StrList::Slice(&[]),
    }];
    let mut bytes = emit_hello(&Hello {
        services: ServiceList::Slice(&one),
        ..common::hello()
    })
    .unwrap();
    let svc = bytes[bytes.len() - 6..].to_vec();
    let count_at = bytes.len() - 7;
    bytes[count_at] = 2;
    bytes.extend_from_slice(&svc);
    assert_eq!(
        Hello::parse(&bytes),
        Err(WireError::BadString("duplicate service name"))
    );
    // An unknown service kind.
    let mut bytes = emit_hello(&Hello {
        services: ServiceList::Slice(&one),
        ..common::hello()
    })
    .unwrap();
    let kind_at = bytes.len() - 2;
    bytes[kind_at] = 9;
    assert_eq!(
        Hello::parse(&bytes),
        Err(WireError::BadValue("service kind"))
    );
}

#[test]
fn heads_refuse_injection() {
    let good = [Header {
        name: "x-a",
        value: b"1, 2\tthree \x80",
    }];
    let h = RequestHead {
        method: "POST",
        target: "/a?b=c",
        headers: HeaderList::Slice(&good),
    };
    let mut buf = vec![0u8; 512];
    let n = h.emit(&mut buf).unwrap();
    assert_eq!(n, h.buffer_len());
    assert_eq!(RequestHead::parse(&buf[..n]).unwrap(), h);
    for value in [&b"a\r\nx-evil: 1"[..], b"a\nb", b"a\0", b"\x7f"] {
        let hs = [Header { name: "x-a", value }];
        let h = RequestHead {
            method: "GET",
            target: "/",
            headers: HeaderList::Slice(&hs),
        };
        assert!(h.emit(&mut buf).is_err(), "{value:?}");
    }
    for name in ["X-Upper", "a b", "", "a:b"] {
        let hs = [Header { name, value: b"v" }];
        let h = ResponseHead {
            status: 200,
            headers: HeaderList::Slice(&hs),
        };
        assert!(h.emit(&mut buf).is_err(), "{name:?}");
    }
    for target in ["", "a", "/a b", "http://evil/"] {
        let h = RequestHead {
            method: "GET",
            target,
            headers: HeaderList::Slice(&[]),
        };
        assert!(h.emit(&mut buf).is_err(), "{target:?}");
    }
    for method in ["", "G T", "GETGETGETGETGETGET"] {
        let h = RequestHead {
            method,
            target: "/",
            headers: HeaderList::Slice(&[]),
        };
        assert!(h.emit(&mut buf).is_err(), "{method:?}");
    }
    // On the wire: a CR smuggled into a value is refused by the parser.
    let hs = [Header {
        name: "x-a",
        value: b"ab",
    }];
    let n = RequestHead {
        method: "GET",
        target: "/",
        headers: HeaderList::Slice(&hs),
    }
    .emit(&mut buf)
    .unwrap();
    buf[n - 1] = b'\r';
    assert_eq!(
        RequestHead::parse(&buf[..n]),
        Err(WireError::BadString("header value"))
    );
    for status in [0u16, 99, 1000] {
        let h = ResponseHead {
            status,
            headers: HeaderList::Slice(&[]),
        };
        assert!(h.emit(&mut buf).is_err());
        assert!(ResponseHead::parse(&[(status >> 8) as u8, status as u8, 0, 0]).is_err());
    }
    let r = ResponseHead::parse(&[
        0, 101, 0, 1, 7, b'u', b'p', b'g', b'r', b'a', b'd', b'e', 0, 9, b'w', b'e', b'b', b's',
        b'o', b'c', b'k', b'e', b't',
    ])
    .unwrap();
    assert_eq!(r.headers.get("upgrade"), Some(&b"websocket"[..]));
}

#[test]
fn handshake_payloads() {
    let init = InitPayload {
        min_version: 1,
        max_version: 3,
        timestamp: 0x0102_0304_0506_0708,
        ciphers: Ciphers::NONE,
    };
    let mut b = [0u8; 16];
    let n = init.emit(&mut b).unwrap();
    // No cipher offered beyond ChaCha20-Poly1305: the original 10 bytes.
    assert_eq!(&b[..n], &[1, 3, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(InitPayload::parse(&b[..n]), Ok(init));
    // AES-256-GCM offered: the 11th byte.
    let aes = InitPayload {
        ciphers: Ciphers::AES_256_GCM,
        ..init
    };
    let n = aes.emit(&mut b).unwrap();
    assert_eq!(&b[..n], &[1, 3, 1, 2, 3, 4, 5, 6, 7, 8, 1]);
    assert_eq!(InitPayload::parse(&b[..n]), Ok(aes));
    // Later versions may append fields, and ciphers: unknown bits are kept
    // (a gateway intersects them with its own) and later bytes ignored.
    let parsed = InitPayload::parse(&[1, 3, 1, 2, 3, 4, 5, 6, 7, 8, 0xef, 0xee]).unwrap();
    assert_eq!(parsed.ciphers, Ciphers(0xef));
    assert!(parsed.ciphers.contains(Ciphers::AES_256_GCM));
    assert!(!Ciphers(0xee).contains(Ciphers::AES_256_GCM));
    assert_eq!(
        Ciphers(0xef).intersection(Ciphers::AES_256_GCM),
        Ciphers::AES_256_GCM
    );
    assert!(
        InitPayload::parse(&[2, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_err(),
        "min above max"
    );
    assert!(
        InitPayload::parse(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_err(),
        "version 0"
    );
    let params = Params {
        max_record: 512,
        max_streams: 1,
        stream_window: 0,
        conn_window: 1,
    };
    let resp = RespPayload {
        status: Status::StaleTimestamp,
        version: 1,
        info: 99,
        params,
        cipher: Cipher::ChaCha20Poly1305,
    };
    let mut b = [0u8; 32];
    let n = resp.emit(&mut b).unwrap();
    assert_eq!(n, RespPayload::LEN);
    assert_eq!(RespPayload::parse(&b[..n]), Ok(resp));
    // AES-256-GCM chosen: a 23rd byte, 1; later bytes are ignored.
    let aes = RespPayload {
        cipher: Cipher::Aes256Gcm,
        ..resp
    };
    let m = aes.emit(&mut b).unwrap();
    assert_eq!((m, b[22]), (RespPayload::MAX_LEN, 1));
    assert_eq!(RespPayload::parse(&b[..m]), Ok(aes));
    b[23] = 0xee;
    assert_eq!(RespPayload::parse(&b[..m + 1]), Ok(aes));
    // A cipher this document does not define is malformed.
    b[22] = 2;
    assert_eq!(
        RespPayload::parse(&b[..m]),
        Err(WireError::BadValue("cipher"))
    );
    assert_eq!(Cipher::Aes256Gcm.name(), "aes-256-gcm");
    assert_eq!(Cipher::default().name(), "chacha20-poly1305");
    b[0] = 9;
    assert!(RespPayload::parse(&b[..n]).is_err(), "unknown status");
    let small = RespPayload {
        params: Params {
            max_record: 511,
            ..params
        },
        ..resp
    };
    small.emit(&mut b).unwrap();
    assert!(RespPayload::parse(&b[..n]).is_err(), "record below 512");
    let big = RespPayload {
        params: Params {
            conn_window: 1 << 31,
            ..params
        },
        ..resp
    };
    big.emit(&mut b).unwrap();
    assert!(RespPayload::parse(&b[..n]).is_err(), "window above 2^31-1");
}
