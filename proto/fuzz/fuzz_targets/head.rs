//! `RequestHead::parse` (first byte even) or `ResponseHead::parse` (odd) on
//! the rest of the input. What parses re-encodes to exactly the input and
//! parses again to an equal head; the header list iterates completely and
//! `get` finds the first value of each name.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::wire::{HeaderList, RequestHead, ResponseHead};

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let mut out = vec![0u8; body.len()];
    if which % 2 == 0 {
        let Ok(head) = RequestHead::parse(body) else {
            return;
        };
        check_headers(&head.headers);
        assert_eq!(head.buffer_len(), body.len());
        let n = head.emit(&mut out).expect("a parsed request head encodes");
        assert_eq!(&out[..n], body, "request head bytes do not round-trip");
        assert_eq!(RequestHead::parse(&out[..n]), Ok(head));
        assert!(head.emit(&mut out[..n - 1]).is_err());
    } else {
        let Ok(head) = ResponseHead::parse(body) else {
            return;
        };
        check_headers(&head.headers);
        assert_eq!(head.buffer_len(), body.len());
        let n = head.emit(&mut out).expect("a parsed response head encodes");
        assert_eq!(&out[..n], body, "response head bytes do not round-trip");
        assert_eq!(ResponseHead::parse(&out[..n]), Ok(head));
        assert!(head.emit(&mut out[..n - 1]).is_err());
    }
});

fn check_headers(headers: &HeaderList<'_>) {
    assert_eq!(headers.iter().count(), headers.len());
    for h in headers.iter() {
        let first = headers.iter().find(|x| x.name == h.name).map(|x| x.value);
        assert_eq!(headers.get(h.name), first);
    }
}
