//! `Hello::parse`: any input parses or is refused; what parses re-encodes
//! to exactly the input (the encoding has one form: fixed-width integers,
//! length-prefixed strings, no trailing bytes), and parses again to an
//! equal value whose service and subprotocol lists iterate completely.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::Hello;

fuzz_target!(|data: &[u8]| {
    let Ok(hello) = Hello::parse(data) else {
        return;
    };
    assert!(proto::wire::valid_device_id(hello.device_id));
    assert_eq!(hello.services.iter().count(), hello.services.len());
    for (i, s) in hello.services.iter().enumerate() {
        assert_eq!(s.subprotocols.iter().count(), s.subprotocols.len());
        assert_eq!(
            hello.services.by_name(s.name).map(|(k, _)| usize::from(k)),
            Some(i)
        );
        assert_eq!(hello.services.by_index(i as u8), Some(s));
    }

    let len = hello.buffer_len();
    assert_eq!(len, data.len(), "buffer_len of {hello:?}");
    let mut out = vec![0u8; len];
    let n = hello.emit(&mut out).expect("a parsed HELLO encodes");
    assert_eq!(&out[..n], data, "HELLO bytes do not round-trip");
    let again = Hello::parse(&out[..n]).expect("an encoded HELLO parses");
    assert_eq!(again, hello);
    if n > 0 {
        assert!(hello.emit(&mut out[..n - 1]).is_err());
    }
});
